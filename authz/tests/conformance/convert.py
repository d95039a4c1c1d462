#!/usr/bin/env python3
"""Converts Istio's authorization test data into decision fixtures for Meshwork.

Usage: convert.py <istio/ztunnel git dir> <istio/istio git dir>

Both repositories may be bare mirrors; files are read at HEAD with `git show`. Needs
PyYAML (to read Istio's expected xDS / Envoy configuration).

Each fixture (fixtures/<source>/<name>.json) is one set of AuthorizationPolicies (the YAML
a user applies), the proxy that decides (`ztunnel`: Istio's ztunnel; `envoy`: Envoy's
network RBAC filter, a waypoint's TCP path) and requests (connections) with Istio's
decision. Where Istio's data gives a policy and its expected conversion (and not a
decision), the decision is computed here by evaluating that expected conversion the way
the proxy evaluates it (ztunnel: `Authorization::matches` in istio/ztunnel src/rbac.rs;
Envoy: the RBAC filter's permission/principal trees), on connections built from the
values the policy names. Nothing of Meshwork is used to compute an expectation.

Sources (Apache-2.0, Copyright Istio Authors):
  ztunnel-rbac   istio/ztunnel src/rbac.rs: the `rbac_test!` tables, the `string_match`
                 test cases and the `rbac_empty_policy` / `rbac_nesting` /
                 `rbac_multi_rule` tests. Each RbacMatch is written as the
                 AuthorizationPolicy istiod converts into it (namespaces -> source
                 namespaces, principals -> source principals, service_accounts -> source
                 serviceAccounts, source_ips -> ipBlocks, destination_ips -> when
                 destination.ip, destination_ports -> to ports; the `not_` forms likewise).
                 Each case is also written as a DENY policy (istiod converts L4-only
                 ALLOW and DENY rules alike): allowed = not matched.
  istio-ambient  istio/istio pilot/pkg/serviceregistry/ambient/testdata/<name>-in.yaml
                 (policy) and <name>.yaml (istiod's expected conversion for ztunnel,
                 TestRBACConvert); AuthorizationPolicy files only.
  istio-envoy-tcp istio/istio pilot/pkg/security/authz/builder/testdata/tcp/<name>-in.yaml
                 and -out.yaml (the expected Envoy network RBAC filter,
                 TestGenerator_GenerateTCP). CUSTOM cases need an ext_authz server and are
                 skipped (SKIPPED.txt).
"""
import base64
import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
AMBIENT = "pilot/pkg/serviceregistry/ambient/testdata"
BUILDER = "pilot/pkg/security/authz/builder/testdata"


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout


def show(repo, path):
    return git(repo, "show", f"HEAD:{path}")


def write(source, name, fixture):
    d = os.path.join(OUT, source)
    os.makedirs(d, exist_ok=True)
    reqs = fixture.pop("requests")
    head = json.dumps(fixture, indent=1, sort_keys=True)
    body = ",\n".join("  " + json.dumps(r, sort_keys=True) for r in reqs)
    with open(os.path.join(d, f"{name}.json"), "w") as f:
        f.write(head[:-2] + ',\n "requests": [\n' + body + "\n ]\n}\n")


# ---------------------------------------------------------------- identities


def parse_identity(s):
    """`td/ns/<ns>/sa/<sa>` -> (td, ns, sa), else None."""
    if s is None:
        return None
    p = s.split("/")
    if len(p) == 5 and p[1] == "ns" and p[3] == "sa" and all(p[i] for i in (0, 2, 4)):
        return (p[0], p[2], p[4])
    return None


# ------------------------------------------------------- ztunnel's matcher


def zt_string(m, check):
    if "exact" in m:
        return check == m["exact"]
    if "prefix" in m:
        return check.startswith(m["prefix"])
    if "suffix" in m:
        return check.endswith(m["suffix"])
    if "presence" in m:
        return check != ""
    raise ValueError(f"unknown string match {m}")


def zt_net(a):
    addr = base64.b64decode(a["address"])
    ip = ipaddress.ip_address(addr)
    return ipaddress.ip_network(f"{ip}/{a['length']}", strict=False)


ZT_FIELDS = ["namespaces", "serviceAccounts", "principals", "sourceIps", "destinationIps",
             "destinationPorts"]


def zt_match_empty(m):
    return not any(m.get(k) or m.get("not" + k[0].upper() + k[1:]) for k in ZT_FIELDS)


def zt_matches(auth, conn):
    """Authorization::matches over istiod's xDS output (groups = rules, rules = clauses)."""
    ident = parse_identity(conn["principal"])
    id_str = "spiffe://" + conn["principal"] if ident else ""
    ns = ident[1] if ident else ""
    src = ipaddress.ip_address(conn["src"])
    dst = ipaddress.ip_address(conn["dst"])
    preds = {
        "namespaces": lambda m: zt_string(m, ns),
        "principals": lambda m: id_str.startswith("spiffe://")
        and zt_string(m, id_str[len("spiffe://"):]),
        "serviceAccounts": lambda m: ident is not None
        and ident[1] == m.get("namespace", "") and ident[2] == m.get("serviceAccount", ""),
        "sourceIps": lambda a: src in zt_net(a),
        "destinationIps": lambda a: dst in zt_net(a),
        "destinationPorts": lambda p: int(p) == conn["port"],
    }
    groups = auth.get("groups") or []
    if not groups:
        return False
    for g in groups:
        rule_match = True
        for clause in g.get("rules") or []:
            matches = clause.get("matches") or []
            clause_match = not matches
            for m in matches:
                if zt_match_empty(m):
                    continue
                ok = True
                for k in ZT_FIELDS:
                    pos = m.get(k) or []
                    neg = m.get("not" + k[0].upper() + k[1:]) or []
                    if pos and not any(preds[k](x) for x in pos):
                        ok = False
                    if neg and any(preds[k](x) for x in neg):
                        ok = False
                if ok:
                    clause_match = True
                    break
            rule_match = rule_match and clause_match
            if not rule_match:
                break
        if rule_match:
            return True
    return False


# ------------------------------------------------- Envoy's network RBAC filter


def envoy_string(m, s):
    if s is None:
        return False
    if m.get("ignoreCase"):
        m = {k: (v.lower() if isinstance(v, str) else v) for k, v in m.items()}
        s = s.lower()
    if "exact" in m:
        return s == m["exact"]
    if "prefix" in m:
        return s.startswith(m["prefix"])
    if "suffix" in m:
        return s.endswith(m["suffix"])
    if "contains" in m:
        return m["contains"] in s
    if "safeRegex" in m:
        return re.fullmatch(m["safeRegex"]["regex"], s) is not None
    raise ValueError(f"unknown string matcher {m}")


def envoy_cidr(c):
    return ipaddress.ip_network(f"{c['addressPrefix']}/{c.get('prefixLen', 0)}",
                                strict=False)


def envoy_permission(p, conn):
    if p.get("any"):
        return True
    if "andRules" in p:
        return all(envoy_permission(r, conn) for r in p["andRules"].get("rules", []))
    if "orRules" in p:
        return any(envoy_permission(r, conn) for r in p["orRules"].get("rules", []))
    if "notRule" in p:
        return not envoy_permission(p["notRule"], conn)
    if "destinationPort" in p:
        return int(p["destinationPort"]) == conn["port"]
    if "destinationIp" in p:
        return ipaddress.ip_address(conn["dst"]) in envoy_cidr(p["destinationIp"])
    if "requestedServerName" in p:
        return envoy_string(p["requestedServerName"], conn.get("sni") or "")
    if "metadata" in p:
        return False  # no filter sets the experimental metadata on these connections
    if "header" in p:
        return envoy_header(p["header"], conn)
    if "urlPath" in p:
        return envoy_path(p["urlPath"], conn)
    if "uriTemplate" in p:
        return envoy_uri_template(p["uriTemplate"]["typedConfig"]["pathTemplate"], conn)
    raise ValueError(f"unsupported permission {p}")


def envoy_principal(p, conn):
    if p.get("any"):
        return True
    if "andIds" in p:
        return all(envoy_principal(r, conn) for r in p["andIds"].get("ids", []))
    if "orIds" in p:
        return any(envoy_principal(r, conn) for r in p["orIds"].get("ids", []))
    if "notId" in p:
        return not envoy_principal(p["notId"], conn)
    if "authenticated" in p:
        if conn["principal"] is None:
            return False
        name = p["authenticated"].get("principalName")
        return name is None or envoy_string(name, "spiffe://" + conn["principal"])
    if "directRemoteIp" in p:
        return ipaddress.ip_address(conn["src"]) in envoy_cidr(p["directRemoteIp"])
    if "remoteIp" in p:  # no PROXY protocol / XFF on these connections: the peer address
        return ipaddress.ip_address(conn["src"]) in envoy_cidr(p["remoteIp"])
    if "sourceIp" in p:
        return ipaddress.ip_address(conn["src"]) in envoy_cidr(p["sourceIp"])
    if "header" in p:
        return envoy_header(p["header"], conn)
    if "metadata" in p:
        return envoy_metadata(p["metadata"], conn)
    raise ValueError(f"unsupported principal {p}")


def http_header(conn, name):
    """The value Envoy matches for a header (pseudo-headers from the request)."""
    h = conn.get("http")
    if h is None:
        return None
    name = name.lower()
    if name == ":authority":
        return h["host"]
    if name == ":method":
        return h["method"]
    if name == ":path":
        return h["path"]
    return (h.get("headers") or {}).get(name)


def envoy_header(m, conn):
    v = http_header(conn, m["name"])
    if "presentMatch" in m:
        r = v is not None
    elif "stringMatch" in m:
        r = envoy_string(m["stringMatch"], v)
    elif "safeRegexMatch" in m:
        r = v is not None and re.fullmatch(m["safeRegexMatch"]["regex"], v) is not None
    elif "exactMatch" in m:
        r = v == m["exactMatch"]
    elif "prefixMatch" in m:
        r = v is not None and v.startswith(m["prefixMatch"])
    elif "suffixMatch" in m:
        r = v is not None and v.endswith(m["suffixMatch"])
    else:
        raise ValueError(f"unsupported header matcher {m}")
    return r != bool(m.get("invertMatch"))


def url_path(conn):
    h = conn.get("http")
    return None if h is None else re.split(r"[?#]", h["path"], maxsplit=1)[0]


def envoy_path(m, conn):
    p = url_path(conn)
    pm = dict(m["path"])
    if m.get("ignoreCase"):
        pm["ignoreCase"] = True
    return envoy_string(pm, p)


def envoy_uri_template(template, conn):
    """Envoy's uri_template matcher: `*` one path segment, `**` any number (at least one
    character)."""
    p = url_path(conn)
    if p is None:
        return False
    rx = ""
    i = 0
    while i < len(template):
        if template.startswith("**", i):
            rx += ".+"
            i += 2
        elif template[i] == "*":
            rx += "[^/]+"
            i += 1
        else:
            rx += re.escape(template[i])
            i += 1
    return re.fullmatch(rx, p) is not None


def envoy_value(m, v):
    if "orMatch" in m:
        return any(envoy_value(x, v) for x in m["orMatch"]["valueMatchers"])
    if "listMatch" in m:
        return isinstance(v, list) and any(envoy_value(m["listMatch"]["oneOf"], x) for x in v)
    if "presentMatch" in m:
        return v is not None
    if "stringMatch" in m:
        return isinstance(v, str) and envoy_string(m["stringMatch"], v)
    raise ValueError(f"unsupported value matcher {m}")


def envoy_metadata(m, conn):
    if m["filter"] != "envoy.filters.http.jwt_authn":
        return False
    h = conn.get("http")
    v = {"payload": h.get("jwt")} if h and h.get("jwt") is not None else None
    for seg in m["path"]:
        if not isinstance(v, dict):
            v = None
            break
        v = v.get(seg["key"])
    return envoy_value(m["value"], v) if v is not None else False


def envoy_allows(filt, conn):
    rules = filt["typedConfig"].get("rules")
    if rules is None:  # only shadow rules: nothing enforced
        return True
    action = rules.get("action", "ALLOW")
    hit = any(
        any(envoy_permission(p, conn) for p in pol.get("permissions", []))
        and any(envoy_principal(p, conn) for p in pol.get("principals", []))
        for pol in (rules.get("policies") or {}).values()
    )
    if action == "ALLOW":
        return hit
    if action == "DENY":
        return not hit
    if action == "LOG":
        return True
    raise ValueError(f"unsupported action {action}")


# ---------------------------------------------------------- request probes

BASE = {"principal": "cluster.local/ns/default/sa/default", "src": "10.99.0.1",
        "dst": "10.99.0.2", "port": 8080}


def first_host(cidr):
    net = ipaddress.ip_network(cidr, strict=False)
    if net.num_addresses <= 2:
        return str(net.network_address)
    return str(net.network_address + 1)


def fill(pattern):
    return pattern.replace("*", "x")


def identity_candidates(value, kind, ns):
    out = []
    v = fill(value)
    if kind == "principal":
        if parse_identity(v):
            out.append(v)
        elif value.endswith("*") and "/" not in v:
            out.append(f"{v}/ns/default/sa/default")
        elif value.startswith("*") and "/" not in v:
            out.append(f"cluster.local/ns/default/sa/{v}")
    elif kind == "namespace":
        if "/" not in v:
            out.append(f"cluster.local/ns/{v}/sa/default")
    elif kind == "serviceAccount":
        sns, _, sa = v.rpartition("/")
        out.append(f"cluster.local/ns/{sns or ns}/sa/{sa}")
    elif kind == "trustDomain":
        out.append(f"{v}/ns/default/sa/default")
    return out


def probes(docs):
    """Connections from the values the policies name, combined two dimensions at a time."""
    ids, srcs, dsts, ports = [BASE["principal"], None], [BASE["src"]], [BASE["dst"]], [8080]

    def add(lst, v):
        if v not in lst:
            lst.append(v)

    for d in docs:
        ns = (d.get("metadata") or {}).get("namespace", "default")
        for r in (d.get("spec") or {}).get("rules") or []:
            for f in r.get("from") or []:
                s = f.get("source") or {}
                for kind, keys in [("principal", ["principals", "notPrincipals"]),
                                   ("namespace", ["namespaces", "notNamespaces"]),
                                   ("serviceAccount", ["serviceAccounts",
                                                       "notServiceAccounts"]),
                                   ("trustDomain", ["trustDomains", "notTrustDomains"])]:
                    for k in keys:
                        for v in s.get(k) or []:
                            for c in identity_candidates(v, kind, ns):
                                add(ids, c)
                for k in ["ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"]:
                    for v in s.get(k) or []:
                        add(srcs, first_host(v))
            for t in r.get("to") or []:
                o = t.get("operation") or {}
                for k in ["ports", "notPorts"]:
                    for v in o.get(k) or []:
                        if str(v).isdigit():
                            add(ports, int(v))
            for c in r.get("when") or []:
                key = c.get("key", "")
                for v in (c.get("values") or []) + (c.get("notValues") or []):
                    if key in ("source.ip", "remote.ip"):
                        add(srcs, first_host(v))
                    elif key == "destination.ip":
                        add(dsts, first_host(v))
                    elif key == "destination.port" and str(v).isdigit():
                        add(ports, int(v))
                    elif key == "source.namespace":
                        for x in identity_candidates(v, "namespace", ns):
                            add(ids, x)
                    elif key == "source.principal":
                        for x in identity_candidates(v, "principal", ns):
                            add(ids, x)
    dims = {"principal": ids, "src": srcs, "dst": dsts, "port": ports}
    seen, out = set(), []
    for a, b in itertools.combinations(dims, 2):
        for va, vb in itertools.product(dims[a], dims[b]):
            c = dict(BASE, **{a: va, b: vb})
            key = tuple(c[k] for k in ("principal", "src", "dst", "port"))
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out


HTTP_BASE = {"method": "GET", "path": "/", "host": "example.org", "header": None,
             "jwt": None}


def fill_path(v):
    p = v.replace("{**}", "x/y").replace("{*}", "x").replace("*", "x")
    return p if p.startswith("/") else "/" + p


def jwt_candidates(v):
    """A JWT payload whose `iss/sub` is the request principal `v` (`*` filled)."""
    f = fill(v)
    iss, _, sub = f.rpartition("/")
    if not iss:
        iss, sub = f, "sub"
    return [{"iss": iss, "sub": sub}]


def http_probes(docs):
    """HTTP requests: the connection dimensions of `probes` plus method, path, host, one
    header and a JWT, combined two dimensions at a time."""
    conns = probes(docs)
    methods, paths, hosts, headers, jwts = ["GET"], ["/"], ["example.org"], [None], [None]

    def add(lst, v):
        if v not in lst:
            lst.append(v)

    header_names = []
    for d in docs:
        for r in (d.get("spec") or {}).get("rules") or []:
            for t in r.get("to") or []:
                o = t.get("operation") or {}
                for v in (o.get("methods") or []) + (o.get("notMethods") or []):
                    add(methods, fill(v))
                for v in (o.get("paths") or []) + (o.get("notPaths") or []):
                    add(paths, fill_path(v))
                for v in (o.get("hosts") or []) + (o.get("notHosts") or []):
                    add(hosts, fill(v))
            for f in r.get("from") or []:
                src = f.get("source") or {}
                for v in (src.get("requestPrincipals") or []) + (
                        src.get("notRequestPrincipals") or []):
                    for j in jwt_candidates(v):
                        add(jwts, j)
            for c in r.get("when") or []:
                key = c.get("key", "")
                vals = (c.get("values") or []) + (c.get("notValues") or [])
                m = re.fullmatch(r"request\.headers\[(.+)\]", key)
                if m:
                    name = m.group(1).lower()
                    if name not in header_names:
                        header_names.append(name)
                    for v in vals:
                        add(headers, (name, fill(v)))
                elif key == "request.auth.principal":
                    for v in vals:
                        for j in jwt_candidates(v):
                            add(jwts, j)
                elif key == "request.auth.audiences":
                    for v in vals:
                        add(jwts, {"iss": "iss", "sub": "sub", "aud": [fill(v)]})
                elif key == "request.auth.presenter":
                    for v in vals:
                        add(jwts, {"iss": "iss", "sub": "sub", "azp": fill(v)})
                elif key.startswith("request.auth.claims["):
                    path = re.findall(r"\[([^\]]+)\]", key)
                    for v in vals:
                        payload = {"iss": "iss", "sub": "sub"}
                        node = payload
                        for seg in path[:-1]:
                            node = node.setdefault(seg, {})
                        node[path[-1]] = fill(v)
                        add(jwts, payload)
    # The connection probes, each with the base request, then two HTTP dimensions at a time
    # over the base connection, then each HTTP dimension against each connection dimension.
    dims = {"method": methods, "path": paths, "host": hosts, "header": headers, "jwt": jwts}
    out, seen = [], set()

    def emit(conn, http):
        c = dict(conn, http=http)
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)

    for c in conns:
        emit(c, dict(HTTP_BASE))
    for a, b in itertools.combinations(dims, 2):
        for va, vb in itertools.product(dims[a], dims[b]):
            emit(BASE, dict(HTTP_BASE, **{a: va, b: vb}))
    conn_dims = {"principal": None, "src": None, "dst": None, "port": None}
    conn_values = {k: sorted({json.dumps(c[k]) for c in conns}) for k in conn_dims}
    for a in dims:
        for k, vals in conn_values.items():
            for va, vk in itertools.product(dims[a], vals):
                emit(dict(BASE, **{k: json.loads(vk)}), dict(HTTP_BASE, **{a: va}))
    return out


def http_attrs(h):
    """The probe's HTTP request as the fixture stores it."""
    out = {"method": h["method"], "path": h["path"], "host": h["host"], "headers": {}}
    if h["header"] is not None:
        out["headers"][h["header"][0]] = h["header"][1]
    if h["jwt"] is not None:
        out["jwt"] = h["jwt"]
    return out


def request(conn, allowed, name=None):
    r = {"principal": conn["principal"], "src": conn["src"], "dst": conn["dst"],
         "port": conn["port"], "allowed": allowed}
    if conn.get("http") is not None:
        r["http"] = conn["http"]
    if name:
        r["name"] = name
    return r


# ----------------------------------------------------------- ztunnel rbac.rs

RS_CONN = re.compile(
    r"fn (\w+_conn\w*)\(\) -> Connection \{\s*Connection \{(.*?)\n    \}\n", re.S)


def rs_conn(body):
    ident = None
    m = re.search(r'trust_domain: "([^"]*)"\.into\(\),\s*namespace: "([^"]*)"\.into\(\),'
                  r'\s*service_account: "([^"]*)"\.into\(\)', body)
    if m:
        ident = f"{m.group(1)}/ns/{m.group(2)}/sa/{m.group(3)}"
    src = re.search(r'src: "([^"]+)"\.parse', body).group(1)
    dst = re.search(r'dst: "([^"]+)"\.parse', body).group(1)
    return {"principal": ident, "src": src.rsplit(":", 1)[0], "dst": dst.rsplit(":", 1)[0],
            "port": int(dst.rsplit(":", 1)[1])}


def rs_values(field, text):
    """The matcher list of one rbac_test! -> (AuthorizationPolicy field path, values)."""
    vals = []
    for m in re.finditer(r'StringMatch::(\w+)\((?:"([^"]*)"\.into\(\))?\)', text):
        kind, v = m.group(1), m.group(2)
        vals.append({"Exact": v, "Prefix": f"{v}*", "Suffix": f"*{v}",
                     "Presence": "*"}[kind])
    for m in re.finditer(r'namespace: "([^"]*)"\.into\(\), service_account: "([^"]*)"', text):
        vals.append(f"{m.group(1)}/{m.group(2)}")
    for m in re.finditer(r'IpNet::new\("([^"]+)"\.parse\(\)\.unwrap\(\), (\d+)\)', text):
        vals.append(f"{m.group(1)}/{m.group(2)}" if m.group(2) != "32" else m.group(1))
    if not vals:
        vals = [str(int(x)) for x in re.findall(r"\d+", text)]
    return vals


def rs_rule(field, vals):
    neg = field.startswith("not_")
    base = field[4:] if neg else field
    if base in ("namespaces", "principals", "service_accounts", "source_ips"):
        key = {"namespaces": "namespaces", "principals": "principals",
               "service_accounts": "serviceAccounts", "source_ips": "ipBlocks"}[base]
        if neg:
            key = "not" + key[0].upper() + key[1:]
        return {"from": [{"source": {key: vals}}]}
    if base == "destination_ports":
        return {"to": [{"operation": {"notPorts" if neg else "ports": vals}}]}
    if base == "destination_ips":
        return {"when": [{"key": "destination.ip", ("notValues" if neg else "values"): vals}]}
    raise ValueError(field)


def policy_yaml(name, ns, action, rules):
    doc = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"action": action, "rules": rules}}
    if rules is None:
        del doc["spec"]["rules"]
    return yaml.safe_dump(doc, sort_keys=False)


def both_actions(origin, commit, name, rules, cases, how):
    """One fixture as ALLOW (allowed = matched) and one as DENY (allowed = not matched)."""
    for action in ("ALLOW", "DENY"):
        write("ztunnel-rbac", f"{name}-{action.lower()}", {
            "origin": origin, "commit": commit, "enforcer": "ztunnel",
            "converted": how,
            "policies": policy_yaml(name.replace("_", "-"), "namespace", action, rules),
            "requests": [request(c, m if action == "ALLOW" else not m, n)
                         for n, c, m in cases],
        })


def ztunnel_rbac(repo):
    commit = git(repo, "rev-parse", "HEAD").strip()
    src = show(repo, "src/rbac.rs")
    tests = src[src.index("mod tests"):]
    conns = {m.group(1): rs_conn(m.group(2)) for m in RS_CONN.finditer(tests)}
    n = 0
    for m in re.finditer(r"rbac_test!\((\w+),\s*(?:(\w+),\s*)?vec!\[(.*?)\],\s*\n(.*?)\);",
                         tests, re.S):
        name, field = m.group(1), m.group(2) or m.group(1)
        vals = rs_values(field, m.group(3))
        cases = [(c, conns[c], r == "true")
                 for c, r in re.findall(r"&(\w+)\(\) => (true|false)", m.group(4))]
        both_actions(f"istio/ztunnel src/rbac.rs rbac_test!({name})", commit, name,
                     [rs_rule(field, vals)], cases,
                     f"RbacMatch {{ {field} }} as the AuthorizationPolicy field istiod "
                     "converts into it")
        n += 1
    for m in re.finditer(r'#\[test_case\(StringMatch::(\w+)\((?:"([^"]*)"\.into\(\))?\), '
                         r'"([^"]*)", (true|false); "([^"]+)"\)\]', tests):
        kind, v, check, res, cname = m.groups()
        pattern = {"Exact": v, "Prefix": f"{v}*", "Suffix": f"*{v}", "Presence": "*"}[kind]
        conn = dict(conns["tls_conn"])
        if check:
            conn["principal"] = f"td/ns/{check}/sa/account"
        else:
            conn["principal"] = None  # the empty string: no identity, no namespace
        both_actions(f"istio/ztunnel src/rbac.rs string_match ({cname})", commit,
                     "string_match_" + cname.replace(" ", "_"),
                     [{"from": [{"source": {"namespaces": [pattern]}}]}],
                     [(f"namespace {check!r}", conn, res == "true")],
                     "StringMatch tested through source namespaces (the matched string is "
                     "the peer's namespace; the empty string is a plaintext peer)")
        n += 1
    n += ztunnel_rbac_tests(tests, conns, commit)
    return n


def rs_conn_literal(body):
    return rs_conn(body)


def ztunnel_rbac_tests(tests, conns, commit):
    """rbac_empty_policy, rbac_nesting, rbac_multi_rule: their policies as YAML, their
    connections and assertions read from the test bodies."""
    n = 0
    plain = conns["plaintext_conn"]
    # rbac_empty_policy: [[[{}]]] -> false; [[[]]] -> true; [[]] -> true; [] -> false.
    # An empty RbacMatch is what istiod makes of a DENY source with only HTTP attributes
    # (deny-groups testdata); a rule without clauses is an empty rule; [] is no rules. A
    # clause without matches ([[[]]]) has no AuthorizationPolicy form (`from: []` is
    # invalid) and is not converted.
    body = re.search(r"fn rbac_empty_policy\(\) \{(.*?)\n    \}\n", tests, re.S).group(1)
    asserts = re.findall(r"assert!\(\s*(!?)\s*allow_policy\(\s*\"empty\",\s*(.*?)\)\s*"
                         r"\.matches\(&plaintext_conn\(\)\)", body, re.S)
    for neg, rules in asserts:
        shape = re.sub(r"\s+", "", rules)
        want = neg != "!"
        if shape.startswith("vec![vec![vec![RbacMatch{"):
            write("ztunnel-rbac", "rbac_empty_policy-empty-match", {
                "origin": "istio/ztunnel src/rbac.rs rbac_empty_policy ([[[RbacMatch{}]]])",
                "commit": commit, "enforcer": "ztunnel",
                "converted": "an empty RbacMatch as istiod writes a DENY source of only "
                             "requestPrincipals (ambient deny-groups testdata); DENY only",
                "policies": policy_yaml("empty", "namespace", "DENY",
                                        [{"from": [{"source": {
                                            "requestPrincipals": ["*"]}}]}]),
                "requests": [request(plain, not want, "plaintext_conn")]})
        elif shape == "vec![vec![]]":
            both_actions("istio/ztunnel src/rbac.rs rbac_empty_policy ([[]])", commit,
                         "rbac_empty_policy-empty-rule", [{}],
                         [("plaintext_conn", plain, want)], "a rule without clauses: `{}`")
        elif shape == "vec![]":
            write("ztunnel-rbac", "rbac_empty_policy-no-rules", {
                "origin": "istio/ztunnel src/rbac.rs rbac_empty_policy ([])",
                "commit": commit, "enforcer": "ztunnel",
                "converted": "an ALLOW policy without rules",
                "policies": policy_yaml("empty", "namespace", "ALLOW", None),
                "requests": [request(plain, want, "plaintext_conn")]})
        else:
            continue
        n += 1
    for fn, rules in [
        ("rbac_nesting", [{"from": [{"source": {"namespaces": ["a"]}},
                                    {"source": {"namespaces": ["b"]}}],
                           "to": [{"operation": {"ports": ["80"]}}]}]),
        ("rbac_multi_rule", [{"from": [{"source": {"namespaces": ["a"]}}]},
                             {"from": [{"source": {"namespaces": ["b"]}}]}]),
    ]:
        body = re.search(rf"fn {fn}\(\) \{{(.*?)\n    \}}\n", tests, re.S).group(1)
        cases = []
        for i, (neg, lit) in enumerate(re.findall(
                r"assert!\((!?)pol\.matches\(&Connection \{(.*?)\}\)\);", body, re.S)):
            cases.append((f"assert {i}", rs_conn(lit), neg != "!"))
        both_actions(f"istio/ztunnel src/rbac.rs {fn}", commit, fn, rules, cases,
                     "the test's nested RbacMatch lists as from/to entries and rules")
        n += 1
    return n


# ------------------------------------------------------------- istio ambient


def istio_ambient(repo, commit):
    n = 0
    for f in git(repo, "ls-tree", "--name-only", f"HEAD:{AMBIENT}").split():
        if not f.endswith("-in.yaml"):
            continue
        text = show(repo, f"{AMBIENT}/{f}")
        docs = [d for d in yaml.safe_load_all(text) if d]
        if any(d.get("kind") != "AuthorizationPolicy" for d in docs):
            continue  # PeerAuthentication conversion: not an authorization decision
        expected = yaml.safe_load(show(repo, f"{AMBIENT}/{f.replace('-in', '')}")) or {}
        action = expected.get("action", "ALLOW")
        reqs = []
        for c in probes(docs):
            m = zt_matches(expected, c)
            reqs.append(request(c, m if action == "ALLOW" else not m))
        write("istio-ambient", f[:-len("-in.yaml")], {
            "origin": f"istio/istio {AMBIENT}/{f} (TestRBACConvert)",
            "commit": commit, "enforcer": "ztunnel",
            "converted": f"decisions of ztunnel's matcher over istiod's expected conversion "
                         f"{f.replace('-in', '')}",
            "policies": text, "requests": reqs})
        n += 1
    return n


def istio_ambient_peer_authentication(repo, commit, skipped):
    """PeerAuthentication files of TestRBACConvert: istiod's expected ztunnel policy for the
    selected workload decides plaintext connections per port (HBONE always passes)."""
    n = 0
    for f in git(repo, "ls-tree", "--name-only", f"HEAD:{AMBIENT}").split():
        if not f.endswith("-in.yaml"):
            continue
        text = show(repo, f"{AMBIENT}/{f}")
        docs = [d for d in yaml.safe_load_all(text) if d]
        if any(d.get("kind") != "PeerAuthentication" for d in docs):
            continue
        expected = yaml.safe_load(show(repo, f"{AMBIENT}/{f.replace('-in', '')}"))
        if not expected:
            skipped.append(f"{AMBIENT}/{f}: no converted policy expected (the decision is "
                           "istiod's static mesh/namespace policy, not in the test data)")
            continue
        workload = [d for d in docs if (d.get("spec") or {}).get("selector")]
        if len(workload) != 1 or expected.get("scope") != "WORKLOAD_SELECTOR":
            skipped.append(f"{AMBIENT}/{f}: not one workload policy")
            continue
        w = workload[0]
        ports = [8080]
        for d in docs:
            for p in ((d.get("spec") or {}).get("portLevelMtls") or {}):
                if int(p) not in ports:
                    ports.append(int(p))
        action = expected.get("action", "ALLOW")
        reqs = []
        for port in ports:
            for principal in (None, BASE["principal"]):
                c = dict(BASE, principal=principal, port=port)
                m = zt_matches(expected, c)
                reqs.append(request(c, m if action == "ALLOW" else not m))
        write("istio-ambient-peerauthn", f[:-len("-in.yaml")], {
            "origin": f"istio/istio {AMBIENT}/{f} (TestRBACConvert)",
            "commit": commit, "enforcer": "ztunnel-peer-authentication",
            "converted": "decisions of ztunnel's matcher over istiod's expected conversion "
                         f"{f.replace('-in', '')} for a pod the workload policy selects",
            "workload": {"namespace": (w.get("metadata") or {}).get("namespace", "default"),
                         "labels": w["spec"]["selector"]["matchLabels"]},
            "policies": text, "requests": reqs})
        n += 1
    return n


def istio_envoy_tcp(repo, commit, skipped):
    n = 0
    d = f"{BUILDER}/tcp"
    names = git(repo, "ls-tree", "--name-only", f"HEAD:{d}").split()
    for f in names:
        if not f.endswith("-in.yaml"):
            continue
        base = f[:-len("-in.yaml")]
        text = show(repo, f"{d}/{f}")
        if base.startswith("custom"):
            skipped.append(f"{d}/{f}: CUSTOM (ext_authz provider; Meshwork has none and "
                           "refuses, docs/istio-differences.md)")
            continue
        outs = [o for o in names if o.startswith(base + "-out")]
        if len(outs) != 1:
            skipped.append(f"{d}/{f}: {len(outs)} expected filters")
            continue
        filt = yaml.safe_load(show(repo, f"{d}/{outs[0]}"))
        docs = [x for x in yaml.safe_load_all(text) if x]
        reqs = [request(c, envoy_allows(filt, c)) for c in probes(docs)]
        write("istio-envoy-tcp", base, {
            "origin": f"istio/istio {d}/{f} (TestGenerator_GenerateTCP)",
            "commit": commit, "enforcer": "envoy",
            "converted": f"decisions of Envoy's network RBAC filter as expected in {outs[0]}",
            "policies": text, "requests": reqs})
        n += 1
    return n


# Cases of TestGenerator_GenerateHTTP that need a trust-domain bundle or an extension
# provider (mesh config) Meshwork's fixtures cannot carry, or an old proxy version.
HTTP_SKIP = {
    "allow-host-before-111": "built for an Istio 1.10 proxy (version-specific output)",
    "custom-simple-http": "CUSTOM (ext_authz provider; Meshwork has none and refuses)",
    "custom-bad-multiple-providers": "CUSTOM (ext_authz provider)",
    "simple-policy-td-aliases": "needs a trust-domain alias bundle (td1 aliases)",
    "simple-policy-multiple-td-aliases": "needs a trust-domain alias bundle",
    "simple-policy-principal-with-wildcard": "needs a trust-domain alias bundle",
    "td-aliases-source-principal": "needs a trust-domain alias bundle",
}


def istio_envoy_http(repo, commit, skipped):
    n = 0
    d = f"{BUILDER}/http"
    names = git(repo, "ls-tree", "--name-only", f"HEAD:{d}").split()
    for f in names:
        if not f.endswith("-in.yaml"):
            continue
        base = f[:-len("-in.yaml")]
        if base in HTTP_SKIP:
            skipped.append(f"{d}/{f}: {HTTP_SKIP[base]}")
            continue
        outs = sorted(o for o in names if re.fullmatch(re.escape(base) + r"-out\d*\.yaml", o))
        if not outs:
            skipped.append(f"{d}/{f}: no expected filter")
            continue
        filters = [yaml.safe_load(show(repo, f"{d}/{o}")) for o in outs]
        text = show(repo, f"{d}/{f}")
        docs = [x for x in yaml.safe_load_all(text) if x]
        reqs = []
        for c in http_probes(docs):
            allowed = all(envoy_allows(flt, c) for flt in filters)
            c = dict(c, http=http_attrs(c["http"]))
            reqs.append(request(c, allowed))
        write("istio-envoy-http", base, {
            "origin": f"istio/istio {d}/{f} (TestGenerator_GenerateHTTP)",
            "commit": commit, "enforcer": "envoy",
            "converted": "decisions of Envoy's HTTP RBAC filter(s) as expected in "
                         + ", ".join(outs),
            "policies": text, "requests": reqs})
        n += 1
    return n


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    zt, istio = sys.argv[1], sys.argv[2]
    for s in ("ztunnel-rbac", "istio-ambient", "istio-ambient-peerauthn", "istio-envoy-tcp",
              "istio-envoy-http"):
        shutil.rmtree(os.path.join(OUT, s), ignore_errors=True)
    commit = git(istio, "rev-parse", "HEAD").strip()
    skipped = []
    counts = {"ztunnel-rbac": ztunnel_rbac(zt),
              "istio-ambient": istio_ambient(istio, commit),
              "istio-ambient-peerauthn": istio_ambient_peer_authentication(istio, commit,
                                                                           skipped),
              "istio-envoy-tcp": istio_envoy_tcp(istio, commit, skipped),
              "istio-envoy-http": istio_envoy_http(istio, commit, skipped)}
    with open(os.path.join(OUT, "SKIPPED.txt"), "w") as f:
        f.write("# Istio test data not converted, and why (written by convert.py)\n")
        for s in skipped:
            f.write(s + "\n")
    print(counts, f"skipped {len(skipped)}")


if __name__ == "__main__":
    main()
