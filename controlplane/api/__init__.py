"""The gRPC edge: servicers, interceptors, conversion."""
