#!/usr/bin/env python3
"""Converts Istio's YAML validation test data into Meshwork conformance fixtures.

Usage: convert.py <istio git dir (bare mirror is fine)> [commit]

Sources (both Apache-2.0, Copyright Istio Authors):
  pkg/config/validation/testdata/crds/<kind>-{valid,invalid}.yaml
      used by pkg/config/validation/openapi_test.go; each YAML document is one case,
      `_err: <text>` marks an expected rejection (the key is removed here).
  pkg/test/datasets/validation/dataset/<group>-<version>-<Kind>.yaml
      used by tests/integration/pilot/validation_test.go; every file must be accepted.

Writes api/tests/conformance/fixtures/istio/<source>/<nnn>-<name>.yaml, each starting with
header comments (`# origin:`, `# commit:`, `# expect: valid|invalid|warning`, `# istio:`)
followed by the manifest exactly as Istio's test has it (minus `_err`). Hand-converted
cases from the Go table tests live in fixtures/hand/ and are not touched by this script.
Only the standard library is used; YAML documents are split on `---` lines and the
`_err:` line is taken out textually, so the manifests stay byte-for-byte Istio's.
"""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "istio")


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout


def documents(text):
    doc = []
    for line in text.splitlines():
        if line.strip() == "---":
            if "".join(doc).strip():
                yield "\n".join(doc) + "\n"
            doc = []
        else:
            doc.append(line)
    if "".join(doc).strip():
        yield "\n".join(doc) + "\n"


def name_of(doc):
    m = re.search(r"^metadata:\s*\n(?:[ \t]+.*\n)*?[ \t]+name:\s*(\S+)", doc, re.M)
    return re.sub(r"[^a-zA-Z0-9.-]", "-", m.group(1).strip("'\"")) if m else "unnamed"


def write(source_dir, n, doc, origin, commit, expect, istio_msg):
    os.makedirs(source_dir, exist_ok=True)
    path = os.path.join(source_dir, f"{n:03}-{name_of(doc)}.yaml")
    head = [f"# origin: {origin}", f"# commit: {commit}", f"# expect: {expect}"]
    if istio_msg:
        head.append(f"# istio: {istio_msg}")
    with open(path, "w") as f:
        f.write("\n".join(head) + "\n" + doc)


def main():
    repo = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else git(repo, "rev-parse", "HEAD").strip()
    shutil.rmtree(OUT, ignore_errors=True)
    files = git(repo, "ls-tree", "-r", "--name-only", commit).splitlines()
    count = 0
    for path in files:
        crd = re.match(r"pkg/config/validation/testdata/crds/(.+)-(valid|invalid)\.yaml$", path)
        dataset = re.match(r"pkg/test/datasets/validation/dataset/(.+)\.yaml$", path)
        if not (crd or dataset):
            continue
        text = git(repo, "show", f"{commit}:{path}")
        src = f"crds-{crd.group(1)}-{crd.group(2)}" if crd else f"dataset-{dataset.group(1)}"
        for i, doc in enumerate(documents(text), 1):
            err = re.search(r"^_err:\s*(.*)$", doc, re.M)
            doc = re.sub(r"^_err:.*\n", "", doc, flags=re.M)
            if crd:
                expect = "invalid" if err or crd.group(2) == "invalid" else "valid"
            else:
                expect = "valid"
            msg = err.group(1).strip().strip("'\"") if err else ""
            write(os.path.join(OUT, src), i, doc, f"istio/istio {path} doc {i}", commit,
                  expect, msg)
            count += 1
    print(f"wrote {count} fixtures from istio/istio@{commit}")


if __name__ == "__main__":
    main()
