#!/usr/bin/env bash
# `make helm-check`: lint and render the chart with the default, HA, minimal and TLS values, validate
# every rendered manifest offline (tools/k8svalidate: the API server's own create validation), and
# prove that bad values files are rejected with the message each one names.
#
# Bad values files (ci/bad/*.yaml) start with two header lines:
#   # rejected-by: schema|template
#   # expect: <text the error must contain>
# "schema": values.schema.json rejects it, so `helm lint` and `helm template` both fail.
# "template": a cross-value check in the templates (`fail`) rejects it: `helm template` (and install)
#   fail; `helm lint` reports the same message but, in its lint mode, Helm downgrades `fail` to INFO.
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM=${HELM:-.tools/bin/helm}
K8SVALIDATE=${K8SVALIDATE:-.tools/bin/k8svalidate}
CHART=deploy/helm/meshplane
OUT=.tools/helm-check
NAMESPACE=meshplane
RELEASE=meshplane
rm -rf "$OUT" && mkdir -p "$OUT"

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
header() { sed -n "s/^# $1: //p" "$2" | head -n1; }

echo "helm: $("$HELM" version --short)"

# ------------------------------------------------------------------ good values
for name in default ha minimal tls; do
  args=()
  [ "$name" = default ] || args=(-f "$CHART/ci/$name-values.yaml")
  if "$HELM" lint --strict "$CHART" "${args[@]}" >"$OUT/$name.lint" 2>&1; then
    ok "helm lint --strict ($name values)"
  else
    bad "helm lint --strict ($name values)"; cat "$OUT/$name.lint"
  fi
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${args[@]}" \
      >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
    ok "helm template ($name values): $(grep -c '^kind:' "$OUT/$name.yaml") objects"
  else
    bad "helm template ($name values)"; cat "$OUT/$name.err"; continue
  fi
  if "$K8SVALIDATE" -namespace "$NAMESPACE" "$OUT/$name.yaml" >"$OUT/$name.validate" 2>&1; then
    ok "k8svalidate ($name values): $(tail -n1 "$OUT/$name.validate")"
  else
    bad "k8svalidate ($name values)"; cat "$OUT/$name.validate"
  fi
done
echo "--- how the HA manifests were validated:"
sed '$d' "$OUT/ha.validate"

# ------------------------------------------------------------------ schema and docs in step with values
if out=$(python3 tools/helm-schema/gen_values_schema.py --check 2>&1); then ok "$out"; else bad "$out"; fi
# Every value the schema allows (it rejects unknown keys, and lint checks values.yaml against it)
# has a row in the README's values table.
if out=$(python3 - "$CHART" <<'PY'
import json, re, sys
chart = sys.argv[1]
schema = json.load(open(f"{chart}/values.schema.json"))
readme = open(f"{chart}/README.md").read()
passthrough = {"resources"}  # documented as one value

def resolve(s):
    while "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[-1]
        if name in passthrough:
            return {}
        s = schema["definitions"][name]
    return s

def leaves(s, prefix):
    s = resolve(s)
    if s.get("type") == "object" and s.get("additionalProperties") is False and "properties" in s:
        for key, sub in s["properties"].items():
            if key != "global":
                yield from leaves(sub, prefix + [key])
    else:
        yield ".".join(prefix)

paths = list(leaves(schema, []))
missing = [p for p in paths if not re.search(r"^\| `" + re.escape(p) + r"` \|", readme, re.M)]
if missing:
    print("README.md does not document: " + ", ".join(missing))
    sys.exit(1)
print(f"README.md documents all {len(paths)} values")
PY
); then ok "$out"; else bad "$out"; fi

# ------------------------------------------------------------------ the validator rejects bad manifests
for file in tools/k8svalidate/testdata/bad/*.yaml; do
  expect=$(header expect "$file")
  if out=$("$K8SVALIDATE" -q "$file" 2>&1); then
    bad "k8svalidate accepted $file"
  elif grep -qF -- "$expect" <<<"$out"; then
    ok "k8svalidate rejects $(basename "$file"): $expect"
  else
    bad "k8svalidate rejected $file without '$expect':"; echo "$out"
  fi
done

# ------------------------------------------------------------------ bad values are rejected
for file in "$CHART"/ci/bad/*.yaml; do
  by=$(header rejected-by "$file")
  expect=$(header expect "$file")
  if [ -z "$by" ] || [ -z "$expect" ]; then bad "$file lacks its '# rejected-by:' / '# expect:' header"; continue; fi
  lint_rc=0; lint_out=$("$HELM" lint "$CHART" -f "$file" 2>&1) || lint_rc=$?
  tpl_rc=0; tpl_out=$("$HELM" template "$RELEASE" "$CHART" -f "$file" 2>&1 >/dev/null) || tpl_rc=$?
  problem=""
  [ "$tpl_rc" -ne 0 ] || problem="helm template accepted it"
  grep -qF -- "$expect" <<<"$tpl_out" || problem="${problem:+$problem; }helm template did not say it"
  grep -qF -- "$expect" <<<"$lint_out" || problem="${problem:+$problem; }helm lint did not say it"
  if [ "$by" = schema ] && [ "$lint_rc" -eq 0 ]; then problem="${problem:+$problem; }helm lint passed"; fi
  if [ -z "$problem" ]; then
    ok "rejected $(basename "$file") ($by): $expect"
  else
    bad "$(basename "$file"): $problem"; printf '%s\n%s\n' "$lint_out" "$tpl_out" | sed 's/^/      /'
  fi
done

echo "helm-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
