#!/usr/bin/env python3
"""Converts Istio's Go table tests for validation into Meshwork conformance fixtures.

Usage: convert_go_tables.py <istio git dir (bare mirror is fine)> [commit]

Source (Apache-2.0, Copyright Istio Authors): the `[]struct{...}{...}` case tables of
`pkg/config/validation/validation_test.go` and `virtualservice_test.go` for the kinds
Meshwork implements (see TABLES). Each case is a Go struct literal of an istio.io/api
message and Istio's verdict (`valid` / `warning`, or an expected error / warning text).

The literal is parsed (a small parser for the subset of Go these tables use: composite
literals, oneof wrappers, well-known wrapper and duration types, enum constants) and
written as the YAML a user would apply: field names in their JSON (lowerCamel) form,
oneof wrappers flattened, `wrapperspb.*Value{Value: v}` as `v`, durations as `1500ms`,
enums by name. Tables that test a fragment (an HTTPRoute, a TrafficPolicy, ...) are
wrapped in the smallest valid resource that reaches the same Istio validator; the wrapper
is named in the fixture's `# converted:` header. Cases that cannot be written as YAML
(a `nil` list element, a value computed by a Go function this script does not model)
are skipped and counted, never guessed.

Writes api/tests/conformance/fixtures/istio-go/<Test>/<nnn>-<slug>.yaml with the same
header format as convert.py. Only the standard library is used.
"""
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "istio-go")
VT = "pkg/config/validation/validation_test.go"
VST = "pkg/config/validation/virtualservice_test.go"

VS_HEAD = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"}
DR_HEAD = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule"}
AP_HEAD = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy"}
PA_HEAD = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication"}
TM_HEAD = {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry"}
WP_HEAD = {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin"}

VS_DEST = [{"destination": {"host": "foo.baz"}}]


def wrap_route(spec_of_route):
    return {"hosts": ["foo.bar"], "http": [spec_of_route]}


def with_route(key):
    """An HTTPRoute with one destination and `key` set to the case's value."""
    return lambda v: wrap_route({"route": VS_DEST, key: v})


# (file, test function, how to read the case's input field, head, wrap(value) -> spec,
#  description of the wrapper or None)
TABLES = [
    (VT, "TestValidateVirtualService", "in", VS_HEAD, None, None),
    (VST, "TestValidateChainingVirtualService", "in", VS_HEAD, None, None),
    (VT, "TestValidateDestinationRule", "in", DR_HEAD, None, None),
    (VT, "TestValidateAuthorizationPolicy", "in", AP_HEAD, None, None),
    (VT, "TestValidatePeerAuthentication", "in", PA_HEAD, None, None),
    (VT, "TestValidateTelemetry", "in", TM_HEAD, None, None),
    (VT, "TestValidateWasmPlugin", "in", WP_HEAD, None, None),
    (VT, "TestValidateHTTPRoute", "route", VS_HEAD, wrap_route,
     "HTTPRoute in a VirtualService with hosts [foo.bar]"),
    (VST, "TestValidateRootHTTPRoute", "route", VS_HEAD, wrap_route,
     "HTTPRoute in a VirtualService with hosts [foo.bar]"),
    (VST, "TestValidateDelegateHTTPRoute", "route", VS_HEAD,
     lambda r: {"http": [r]}, "HTTPRoute in a delegate VirtualService (no hosts)"),
    (VT, "TestValidateTrafficPolicy", "in", DR_HEAD,
     lambda v: {"host": "reviews", "trafficPolicy": v},
     "trafficPolicy of a DestinationRule for host reviews"),
    (VT, "TestValidateConnectionPool", "in", DR_HEAD,
     lambda v: {"host": "reviews", "trafficPolicy": {"connectionPool": v}},
     "trafficPolicy.connectionPool of a DestinationRule for host reviews"),
    (VT, "TestValidateLoadBalancer", "in", DR_HEAD,
     lambda v: {"host": "reviews", "trafficPolicy": {"loadBalancer": v}},
     "trafficPolicy.loadBalancer of a DestinationRule for host reviews"),
    (VT, "TestValidateOutlierDetection", "in", DR_HEAD,
     lambda v: {"host": "reviews", "trafficPolicy": {"outlierDetection": v}},
     "trafficPolicy.outlierDetection of a DestinationRule for host reviews"),
    (VT, "TestValidateCORSPolicy", "in", VS_HEAD, with_route("corsPolicy"),
     "corsPolicy of an HTTPRoute routing to foo.baz"),
    (VT, "TestValidateHTTPRetry", "in", VS_HEAD, with_route("retries"),
     "retries of an HTTPRoute routing to foo.baz"),
    (VT, "TestValidateHTTPRewrite", "in", VS_HEAD, with_route("rewrite"),
     "rewrite of an HTTPRoute routing to foo.baz"),
    (VT, "TestValidateHTTPFaultInjectionAbort", "in", VS_HEAD,
     lambda v: wrap_route({"route": VS_DEST, "fault": {"abort": v}}),
     "fault.abort of an HTTPRoute routing to foo.baz"),
    (VT, "TestValidateHTTPFaultInjectionDelay", "in", VS_HEAD,
     lambda v: wrap_route({"route": VS_DEST, "fault": {"delay": v}}),
     "fault.delay of an HTTPRoute routing to foo.baz"),
    (VT, "TestValidateHTTPRedirect", "redirect", VS_HEAD,
     lambda v: wrap_route({"redirect": v}), "redirect of an HTTPRoute"),
    (VT, "TestValidateHTTPDirectResponse", "directResponse", VS_HEAD,
     lambda v: wrap_route({"directResponse": v}), "directResponse of an HTTPRoute"),
    (VT, "TestValidateDestination", "destination", VS_HEAD,
     lambda v: wrap_route({"route": [{"destination": v}]}),
     "destination of an HTTPRoute"),
    (VT, "TestValidateHTTPHeaderValue", "input", VS_HEAD,
     lambda v: wrap_route({"route": VS_DEST, "headers": {"request": {"set": {"x-test": v}}}}),
     "value of a request header set by an HTTPRoute routing to foo.baz"),
    (VT, "Test_validateExportTo", "exportTo", None, None,
     "exportTo of a VirtualService, or of a DestinationRule with a workloadSelector when the "
     "case says so (ServiceEntry cases are skipped)"),
    (VT, "TestValidateRouteDestination", "routes", VS_HEAD,
     lambda v: {"hosts": ["foo.bar"], "tcp": [{"route": v}]},
     "route of a TCP route in a VirtualService with hosts [foo.bar]"),
]

CONSTS = {
    "someName": "foo",
    "someNamespace": "bar",
    "constants.DefaultAuthenticationPolicyName": "default",
    "gvk.KubernetesGateway.Group": "gateway.networking.k8s.io",
    "gvk.KubernetesGateway.Kind": "Gateway",
    "gvk.Service.Group": "",
    "gvk.Service.Kind": "Service",
    "gvk.ServiceEntry.Group": "networking.istio.io",
    "gvk.ServiceEntry.Kind": "ServiceEntry",
    "gvk.GatewayClass.Group": "gateway.networking.k8s.io",
    "gvk.GatewayClass.Kind": "GatewayClass",
    "gvk.AuthorizationPolicy.Group": "security.istio.io",
    "gvk.AuthorizationPolicy.Kind": "AuthorizationPolicy",
}
LOCALS = {}
TIME = {"time.Nanosecond": 1, "time.Microsecond": 1000, "time.Millisecond": 10**6,
        "time.Second": 10**9, "time.Minute": 60 * 10**9, "time.Hour": 3600 * 10**9}


class Unconvertible(Exception):
    pass


class Enum(str):
    pass


class GoError(str):
    """An `errors.New(...)` value: a table's expected error."""


class Dur:
    def __init__(self, nanos):
        self.nanos = nanos


class Struct:
    def __init__(self, tname, fields):
        self.tname = tname
        self.fields = fields  # list of (key, value); key is an identifier or a value


TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|`[^`]*`)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>\[\]|[{}\[\](),:&*+\-/.])
  | (?P<other>'(?:[^'\\]|\\.)+'|.)
""", re.X | re.S)


def tokens(src):
    out, pos = [], 0
    while pos < len(src):
        m = TOKEN.match(src, pos)
        if not m:
            raise Unconvertible(f"cannot tokenize at {src[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def go_string(lit):
    if lit.startswith("`"):
        return lit[1:-1]
    return json.loads(lit.replace("\\'", "'"))


class Parser:
    def __init__(self, toks):
        self.t = toks
        self.i = 0

    def peek(self, k=0):
        return self.t[self.i + k] if self.i + k < len(self.t) else ("eof", "")

    def next(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, v):
        tok = self.next()
        if tok[1] != v:
            raise Unconvertible(f"expected {v!r}, got {tok[1]!r}")

    def type_(self):
        """Parses a type; returns ('slice', elem) / ('map', val) / ('named', name)."""
        tok = self.next()
        if tok[1] == "[]":
            return ("slice", self.type_())
        if tok[1] == "*":
            return self.type_()
        if tok[1] == "map":
            self.expect("[")
            self.type_()
            self.expect("]")
            return ("map", self.type_())
        if tok[0] == "id":
            return ("named", tok[1])
        raise Unconvertible(f"bad type at {tok[1]!r}")

    def skip_braces(self):
        self.expect("{")
        depth = 1
        while depth:
            v = self.next()[1]
            depth += {"{": 1, "}": -1}.get(v, 0)

    def composite(self, ty):
        """Body of a composite literal of type `ty` (the `{` is next)."""
        self.expect("{")
        items = []
        while self.peek()[1] != "}":
            if self.peek(1)[1] == ":" and self.peek()[0] in ("id", "str", "num"):
                k = self.next()
                self.next()
                key = k[1] if k[0] == "id" and ty[0] != "map" else self.scalar_key(k)
                elem = ty[1] if ty[0] == "map" else None
                items.append((key, self.value(elem)))
            else:
                items.append((None, self.value(ty[1] if ty[0] == "slice" else None)))
            if self.peek()[1] == ",":
                self.next()
        self.expect("}")
        if ty[0] == "slice":
            return [v for _, v in items]
        if ty[0] == "map":
            return {k: v for k, v in items}
        return Struct(ty[1], items)

    def scalar_key(self, tok):
        if tok[0] == "str":
            return go_string(tok[1])
        if tok[0] == "num":
            return tok[1]
        if tok[1] in CONSTS:
            return CONSTS[tok[1]]
        raise Unconvertible(f"map key {tok[1]}")

    def arith(self):
        """A constant integer expression of numbers and time.* units (durations)."""
        def atom():
            tok = self.next()
            if tok[1] == "(":
                v = expr()
                self.expect(")")
                return v
            if tok[1] == "-":
                return -atom()
            if tok[0] == "num":
                return float(tok[1]) if "." in tok[1] else int(tok[1])
            if tok[1] in TIME:
                return TIME[tok[1]]
            if tok[1] in ("int64", "int32", "time.Duration") and self.peek()[1] == "(":
                self.next()
                v = expr()
                self.expect(")")
                return int(v)
            raise Unconvertible(f"expression term {tok[1]!r}")

        def term():
            v = atom()
            while self.peek()[1] in ("*", "/"):
                op = self.next()[1]
                r = atom()
                v = v * r if op == "*" else v // r
            return v

        def expr():
            v = term()
            while self.peek()[1] in ("+", "-"):
                op = self.next()[1]
                r = term()
                v = v + r if op == "+" else v - r
            return v

        return expr()

    def value(self, elided=None):
        tok = self.peek()
        if tok[1] == "&":
            self.next()
            return self.value(elided)
        if tok[1] == "{":
            if elided is None:
                raise Unconvertible("composite literal without a type")
            return self.composite(elided)
        if tok[1] in ("[]", "map"):
            ty = self.type_()
            return self.composite(ty)
        if tok[0] == "str":
            self.next()
            return go_string(tok[1])
        if tok[0] == "num" or tok[1] == "-":
            if tok[1] == "-":
                self.next()
                v = self.value()
                return -v
            self.next()
            return float(tok[1]) if re.search(r"[.eE]", tok[1]) else int(tok[1])
        if tok[0] == "id":
            name = tok[1]
            nxt = self.peek(1)[1]
            if nxt == "{":
                self.next()
                return self.composite(("named", name))
            if name == "durationpb.New" and nxt == "(":
                self.next()
                self.next()
                n = self.arith()
                self.expect(")")
                return Dur(int(n))
            if name in ("true", "false"):
                self.next()
                return name == "true"
            if name == "nil":
                self.next()
                return None
            if name in CONSTS:
                self.next()
                return CONSTS[name]
            if name in LOCALS:
                self.next()
                return LOCALS[name]
            if name in ("errors.New", "fmt.Errorf") and nxt == "(":
                self.next()
                self.next()
                msg = go_string(self.next()[1])
                while self.peek()[1] != ")":
                    self.next()
                self.next()
                return GoError(msg)
            if name in ("int64", "int32", "uint32", "time.Duration") and nxt == "(":
                return self.arith()
            if nxt == "(":
                raise Unconvertible(f"call {name}()")
            pkg, _, const = name.rpartition(".")
            m = re.search(r"_((?:[A-Z0-9]+_)*[A-Z0-9]+)$", const)
            if pkg in ("networking", "security_beta", "telemetry", "networkingv1beta1",
                       "extensions") and m:
                self.next()
                return Enum(m.group(1))
            raise Unconvertible(f"identifier {name}")
        raise Unconvertible(f"unexpected {tok[1]!r}")


# ------------------------------------------------------------------ Go value -> YAML value

WRAPPERS = re.compile(r"^(wrapperspb|wrappers|wrappers_pb|types)\.(U?Int(32|64)|Bool|Double|Float|String)Value$")


def json_name(go):
    special = {"Consecutive_5XxErrors": "consecutive5xxErrors", "String_": "string"}
    if go in special:
        return special[go]
    return go[0].lower() + go[1:]


def fmt_duration(n):
    if n < 0:
        raise Unconvertible("negative duration literal")
    for unit, size in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6),
                       ("us", 10**3)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}ns"


def convert(v):
    if v is None:
        raise Unconvertible("nil value")
    if isinstance(v, Dur):
        return fmt_duration(v.nanos)
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, list):
        if any(x is None for x in v):
            raise Unconvertible("nil list element")
        return [convert(x) for x in v]
    if isinstance(v, dict):
        if any(x is None for x in v.values()):
            raise Unconvertible("nil map value")
        return {str(k): convert(x) for k, x in v.items()}
    if isinstance(v, Struct):
        t = v.tname
        if WRAPPERS.match(t):
            vals = [x for k, x in v.fields if k == "Value"]
            return convert(vals[0]) if vals else {"Bool": False, "String": ""}.get(
                WRAPPERS.match(t).group(2), 0)
        if t in ("durationpb.Duration", "duration.Duration", "types.Duration"):
            f = dict(v.fields)
            return fmt_duration(int(f.get("Seconds", 0)) * 10**9 + int(f.get("Nanos", 0)))
        out = {}
        for k, x in v.fields:
            if k is None:
                raise Unconvertible(f"positional field in {t}")
            if x is None:
                continue
            if isinstance(x, Struct) and is_oneof_wrapper(x):
                for ik, ix in x.fields:
                    out[json_name(ik)] = convert(ix)
                continue
            out[json_name(k)] = convert(x)
        return out
    return v


def is_oneof_wrapper(s):
    name = s.tname.rpartition(".")[2]
    return (len(s.fields) == 1 and s.fields[0][0] is not None
            and "_" in name and name.endswith("_" + s.fields[0][0]))


# ------------------------------------------------------------------ YAML output

PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def yscalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if PLAIN.match(v) and v.lower() not in YAML_WORDS:
        return v
    return json.dumps(v, ensure_ascii=False)


def yaml_lines(v, indent=0):
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            return [pad + "{}"]
        out = []
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                out.append(f"{pad}{yscalar(k) if not re.match(r'^[A-Za-z_][A-Za-z0-9_.-]*$', k) else k}:")
                out += yaml_lines(x, indent + 2)
            else:
                key = k if re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", k) else yscalar(k)
                out.append(f"{pad}{key}: {flow(x)}")
        return out
    if isinstance(v, list):
        out = []
        for x in v:
            sub = yaml_lines(x, indent + 2)
            out.append(pad + "- " + sub[0].lstrip())
            out += sub[1:]
        return out
    return [pad + yscalar(v)]


def flow(x):
    if isinstance(x, dict):
        return "{}" if not x else json.dumps(x)
    if isinstance(x, list):
        return "[]" if not x else json.dumps(x)
    return yscalar(x)


# ------------------------------------------------------------------ tables

def table(src, test):
    start = src.index(f"func {test}(")
    body = src[start:]
    m = re.search(r":?=\s*\[\]struct\s*\{", body)
    # local constants declared before the table (`duration := durationpb.Duration{...}`)
    for lm in re.finditer(r"^\s*(\w+) := (durationpb\.Duration\{[^}\n]*\})$", body[:m.start()], re.M):
        LOCALS[lm.group(1)] = Parser(tokens(lm.group(2))).value()
    toks = tokens(body[m.end() - 1:])
    p = Parser(toks)
    # struct field names (for positional cases)
    p.expect("{")
    fields = []
    while p.peek()[1] != "}":
        names = [p.next()[1]]
        while p.peek()[1] == ",":
            p.next()
            names.append(p.next()[1])
        p.type_()
        fields += names
    p.expect("}")
    p.expect("{")
    cases = []
    while p.peek()[1] != "}":
        start_tok = p.i
        try:
            p.expect("{")
            items = {}
            pos = 0
            while p.peek()[1] != "}":
                if p.peek(1)[1] == ":" and p.peek()[0] == "id":
                    key = p.next()[1]
                    p.next()
                else:
                    key = fields[pos]
                pos += 1
                try:
                    items[key] = p.value()
                except Unconvertible as e:
                    items[key] = e
                    skip_value(p)
                if p.peek()[1] == ",":
                    p.next()
            p.expect("}")
        except Unconvertible as e:
            raise Unconvertible(f"{test}: case at token {start_tok}: {e}")
        cases.append(items)
        if p.peek()[1] == ",":
            p.next()
    return cases


def skip_value(p):
    """Skips the rest of a value after a parse failure (up to the next , or } at depth 0)."""
    depth = 0
    while True:
        v = p.peek()[1]
        if depth == 0 and v in (",", "}"):
            return
        if v in ("{", "(", "["):
            depth += 1
        if v in ("}", ")", "]"):
            depth -= 1
        p.next()


def verdict(c):
    """(expect, istio message) from a case's fields."""
    if "input" in c:  # TestValidateHTTPHeaderValue: `expected` is an error or nil
        exp = c.get("expected")
        return ("invalid", str(exp)) if exp else ("valid", "")
    if "wantErr" in c:  # Test_validateExportTo
        return ("invalid", "") if c["wantErr"] else ("valid", "")
    if "err" in c:  # TestValidateTelemetry: expected error / warning substrings
        if c["err"]:
            return "invalid", c["err"]
        return ("warning", c["warning"]) if c.get("warning") else ("valid", "")
    if "out" in c:  # TestValidateWasmPlugin: expected error / warning substrings
        out = c["out"]
        if isinstance(out, Unconvertible):  # a computed message (fmt.Sprintf): an error
            return "invalid", ""
        if out:
            return "invalid", out
        return ("warning", c["warning"]) if c.get("warning") else ("valid", "")
    valid = c.get("valid")
    warn = c.get("warning", c.get("Warning", c.get("warn", False)))
    if valid is None:
        raise Unconvertible("no verdict")
    if not valid:
        return "invalid", ""
    return ("warning", "") if warn is True else ("valid", "")


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "case"


def main():
    repo = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else subprocess.run(
        ["git", "-C", repo, "rev-parse", "HEAD"], check=True, capture_output=True,
        text=True).stdout.strip()
    shutil.rmtree(OUT, ignore_errors=True)
    written, skipped = 0, []
    for path, test, field, head, wrap, wrapped in TABLES:
        src = subprocess.run(["git", "-C", repo, "show", f"{commit}:{path}"], check=True,
                             capture_output=True, text=True).stdout
        for n, c in enumerate(table(src, test), 1):
            name = c.get("name") or c.get("input") or f"case {n}"
            try:
                raw = c.get(field)
                if isinstance(raw, Unconvertible):
                    raise raw
                if test == "Test_validateExportTo":
                    if c.get("isServiceEntry"):
                        raise Unconvertible("ServiceEntry case (kind not supported)")
                    if c.get("isDestinationRuleWithSelector"):
                        head = DR_HEAD
                        wrap = lambda v: {"host": "reviews", "exportTo": v,
                                          "workloadSelector": {"matchLabels": {"app": "a"}}}
                    else:
                        head = VS_HEAD
                        wrap = lambda v: {"hosts": ["foo.bar"], "http": [{"route": VS_DEST}],
                                          "exportTo": v}
                    raw = raw if raw is not None else []
                if isinstance(raw, Struct) and head["kind"] not in raw.tname and wrap is None:
                    raise Unconvertible(f"input is a {raw.tname}")
                spec = convert(raw)
                if wrap:
                    spec = wrap(spec)
                expect, msg = verdict(c)
                annotations = c.get("annotations")
                if isinstance(annotations, Unconvertible):
                    raise annotations
            except Unconvertible as e:
                skipped.append(f"{test} {name!r}: {e}")
                continue
            ns = c.get("namespace") if isinstance(c.get("namespace"), str) else "bar"
            meta = {"name": c.get("configName") or "case", "namespace": ns}
            if annotations:
                meta["annotations"] = annotations
            doc = dict(head)
            doc["metadata"] = meta
            doc["spec"] = spec
            lines = [f"# origin: istio/istio {path} {test} {json.dumps(name)}",
                     f"# commit: {commit}", f"# expect: {expect}"]
            if msg:
                lines.append(f"# istio: {msg}")
            lines.append("# converted: convert_go_tables.py" +
                         (f" (wrapped: {wrapped})" if wrapped else ""))
            d = os.path.join(OUT, test)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"{n:03}-{slug(name)}.yaml"), "w") as f:
                f.write("\n".join(lines + yaml_lines(doc)) + "\n")
            written += 1
    with open(os.path.join(OUT, "SKIPPED.txt"), "w") as f:
        f.write(f"# cases of istio/istio@{commit} Go tables not convertible to YAML\n")
        f.write("\n".join(skipped) + "\n")
    print(f"wrote {written} fixtures, skipped {len(skipped)} (see {OUT}/SKIPPED.txt)")


if __name__ == "__main__":
    main()
