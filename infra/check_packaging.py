#!/usr/bin/env python3
"""Runs the GitHub deploy workflow's packaging step here, offline, so a missing input fails in CI first.

The step with `id: package` in .github/workflows/deploy.yml is read from the workflow and its `run`
text is executed by bash, exactly as the runner would, with its `env` names set to an example
configuration (examples/mesh.toml, which keeps state in Table Storage). Two inputs the runner has and
this machine may not are swapped in through variables the step's script (infra/package.sh) reads:
  GALBRIDGE_PACKAGE_BINARY  a stand-in static x86-64 executable written here (no musl toolchain needed)
  GALBRIDGE_VALIDATOR       the galbridge executable of this checkout (cargo build), for `validate`
The zip is then read back with `cargo xtask check-package`.

Self-tests (--self-test): the same step must fail, with a message that names the problem, when
  - no configuration is given at all (the repository has no galbridge.toml);
  - the configuration does not validate (`galbridge validate`);
  - the configuration keeps its state in a local folder (refused by `cargo xtask package`);
and must succeed with the configuration passed as text (GALBRIDGE_CONFIG_TOML).

Usage: python3 infra/check_packaging.py --validator PATH [--self-test]
Needs PyYAML (the checkov virtualenv of .ci/infra-checks.sh has it).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github/workflows/deploy.yml"
EXAMPLE = ROOT / "examples/mesh.toml"


def stand_in_executable(path: Path) -> None:
    """A minimal static ELF64 x86-64 executable (one PT_LOAD, no PT_INTERP) that calls exit(0)."""
    code = bytes.fromhex("b83c000000" "31ff" "0f05")  # mov eax, 60; xor edi, edi; syscall
    base, header_size, ph_size = 0x400000, 64, 56
    entry = base + header_size + ph_size
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0x3E, 1, entry, header_size, 0, 0, header_size, ph_size, 1, 0, 0, 0
    )
    size = header_size + ph_size + len(code)
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    path.write_bytes(header + program + code)
    path.chmod(0o755)


def package_step() -> dict:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    for job_name, job in workflow.get("jobs", {}).items():
        for step in job.get("steps", []):
            if step.get("id") == "package":
                if "infra/package.sh" not in step.get("run", ""):
                    raise SystemExit(f"deploy.yml job {job_name}: step `package` does not run infra/package.sh")
                return step
    raise SystemExit("deploy.yml has no step with `id: package`")


def run_step(step: dict, env_values: dict[str, str], work: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GALBRIDGE_", "GITHUB_"))}
    # The step's own env names, all given (empty unless the case sets them), as a runner would.
    for name in step.get("env", {}):
        env[name] = ""
    env.update(env_values)
    env["GALBRIDGE_PACKAGE_OUT"] = str(work / "dist/galbridge.zip")
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def main() -> int:
    args = sys.argv[1:]
    if "--validator" not in args:
        print(__doc__, file=sys.stderr)
        return 2
    validator = args[args.index("--validator") + 1]
    step = package_step()
    for name in ("GALBRIDGE_CONFIG_TOML", "GALBRIDGE_CONFIG_FILE"):
        if name not in step.get("env", {}):
            print(f"packaging: the workflow step does not pass {name}", file=sys.stderr)
            return 1
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        binary = work / "galbridge"
        stand_in_executable(binary)
        base = {"GALBRIDGE_PACKAGE_BINARY": str(binary), "GALBRIDGE_VALIDATOR": validator}

        result = run_step(step, {**base, "GALBRIDGE_CONFIG_FILE": str(EXAMPLE.relative_to(ROOT))}, work)
        zip_path = work / "dist/galbridge.zip"
        if result.returncode != 0 or not zip_path.is_file():
            failures.append(f"the packaging step failed on {EXAMPLE.name}:\n{result.stdout}{result.stderr}")
        else:
            check = subprocess.run(
                ["cargo", "xtask", "check-package", str(zip_path)], cwd=ROOT, capture_output=True, text=True
            )
            if check.returncode != 0:
                failures.append(f"cargo xtask check-package refused the zip:\n{check.stdout}{check.stderr}")
            else:
                print(f"packaging: the deploy workflow's step packaged {EXAMPLE.relative_to(ROOT)}")
                print("  " + "\n  ".join(check.stdout.strip().splitlines()))

        if "--self-test" in args:
            bad_toml = work / "broken.toml"
            bad_toml.write_text("[state\nkind = \n")
            cases = [
                ("no configuration at all", {"GALBRIDGE_CONFIG_FILE": "no/such/galbridge.toml"}, "no operator configuration"),
                ("a configuration that does not validate", {"GALBRIDGE_CONFIG_FILE": str(bad_toml)}, "does not validate"),
                ("state kept in a local folder", {"GALBRIDGE_CONFIG_FILE": "examples/one-way.toml"}, "keeps its state in Table Storage"),
            ]
            for label, values, expected in cases:
                result = run_step(step, {**base, **values}, work / label.replace(" ", "-"))
                output = result.stdout + result.stderr
                if result.returncode == 0:
                    failures.append(f"self-test '{label}': the packaging step succeeded")
                elif expected.lower() not in output.lower():
                    failures.append(f"self-test '{label}': failed without saying {expected!r}:\n{output}")
                else:
                    print(f"packaging: self-test '{label}': refused as expected")
            # The configuration as text (a repository variable), no file at all.
            values = {"GALBRIDGE_CONFIG_TOML": EXAMPLE.read_text(), "GALBRIDGE_CONFIG_FILE": "no/such/galbridge.toml"}
            result = run_step(step, {**base, **values}, work / "from-variable")
            if result.returncode != 0:
                failures.append(f"self-test 'configuration as text': failed:\n{result.stdout}{result.stderr}")
            else:
                print("packaging: self-test 'configuration as text (GALBRIDGE_CONFIG_TOML)': packaged")
    for failure in failures:
        print(f"packaging: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
