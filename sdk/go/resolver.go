package meshplane

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc/resolver"
)

// defaultIPPort is the port of an address given without one, as in gRPC C-core and grpc-js.
const defaultIPPort = "443"

// ipResolverBuilder resolves the targets "ipv4:host[:port][,host[:port],...]" and
// "ipv6:host|[host]:port[,...]" of gRPC's naming doc
// (https://github.com/grpc/grpc/blob/master/doc/naming.md): several control plane addresses,
// which the Python and TypeScript SDKs (gRPC C-core, grpc-js) accept and grpc-go does not resolve
// itself. Agents and clients register it on their own connections only (grpc.WithResolvers).
type ipResolverBuilder struct{ scheme string }

var _ resolver.AuthorityOverrider = ipResolverBuilder{}

func (b ipResolverBuilder) Scheme() string { return b.scheme }

func (b ipResolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	addresses, err := parseIPTarget(b.scheme, target.Endpoint())
	if err != nil {
		return nil, err
	}
	state := resolver.State{Addresses: make([]resolver.Address, len(addresses))}
	for i, address := range addresses {
		state.Addresses[i] = resolver.Address{Addr: address}
	}
	_ = cc.UpdateState(state) // the addresses never change: nothing to retry
	return staticResolver{}, nil
}

// OverrideAuthority makes the first address the connection's authority (the ":authority" header
// and, over TLS without a server name, the name verified in the plane's certificate), as grpc-js
// does, rather than the whole comma-separated list.
func (b ipResolverBuilder) OverrideAuthority(target resolver.Target) string {
	addresses, err := parseIPTarget(b.scheme, target.Endpoint())
	if err != nil || len(addresses) == 0 {
		return target.Endpoint()
	}
	return addresses[0]
}

type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}

// parseIPTarget returns the host:port addresses of an ipv4 or ipv6 target's list.
func parseIPTarget(scheme, list string) ([]string, error) {
	if list == "" {
		return nil, fmt.Errorf("meshplane: target %s: no address", scheme)
	}
	var addresses []string
	for _, part := range strings.Split(list, ",") {
		host, port := part, defaultIPPort
		if (scheme == "ipv4" && strings.Contains(part, ":")) || (scheme == "ipv6" && strings.HasPrefix(part, "[")) {
			var err error
			if host, port, err = net.SplitHostPort(part); err != nil {
				return nil, fmt.Errorf("meshplane: target %s:%s: address %q: %w", scheme, list, part, err)
			}
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || (scheme == "ipv4") != ip.Is4() {
			return nil, fmt.Errorf("meshplane: target %s:%s: %q is not an %s address", scheme, list, host, strings.ToUpper(scheme[:2])+scheme[2:])
		}
		if _, err := netip.ParseAddrPort(net.JoinHostPort(host, port)); err != nil {
			return nil, fmt.Errorf("meshplane: target %s:%s: address %q: bad port %q", scheme, list, part, port)
		}
		addresses = append(addresses, net.JoinHostPort(host, port))
	}
	return addresses, nil
}

// checkTarget fails early (in Agent.Run, NewClient) for an ipv4 or ipv6 target that does not parse.
func checkTarget(target string) error {
	for _, scheme := range []string{"ipv4", "ipv6"} {
		if list, ok := strings.CutPrefix(target, scheme+":"); ok {
			_, err := parseIPTarget(scheme, strings.TrimPrefix(list, "///"))
			return err
		}
	}
	return nil
}
