#!/usr/bin/env python3
"""Validates azure.yaml against azd's published JSON schema, offline, plus galbridge's own azd rules.

The schema is vendored (infra/schemas/azd-azure.yaml.v1.0.json, provenance in infra/schemas/README.md).
Its references to other documents (azd extension schemas on raw.githubusercontent.com, reached only
for the azure.ai.* hosts, or while a service has no host at all) are never fetched: they resolve to
an empty schema, and a service whose host would need one is reported instead.

galbridge's rules on top of the schema (the schema allows a project with no services at all):
  - a service with `host: function` exists, so `azd deploy` deploys something;
  - it is `language: custom` with `dist` naming a .zip (azd deploys a prebuilt package as-is);
  - its prepackage hook builds that zip with infra/package.sh;
  - no hook calls the Azure CLI (`az …`): it needs a login of its own, which azd does not give it.

Usage: python3 infra/check_azure_yaml.py             # exit 0 when azure.yaml is valid
       python3 infra/check_azure_yaml.py --self-test # also proves bad samples are refused
Needs PyYAML and jsonschema (installed into the checkov virtualenv by .ci/infra-checks.sh).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT201909

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "infra/schemas/azd-azure.yaml.v1.0.json"
AZURE_YAML = ROOT / "azure.yaml"


def offline(uri: str) -> Resource:
    """No network: any other document the schema names is an empty (permissive) schema."""
    return Resource.from_contents({}, default_specification=DRAFT201909)


def schema_errors(document: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, registry=Registry(retrieve=offline))
    errors = []
    for name, service in (document.get("services") or {}).items():
        host = (service or {}).get("host", "") if isinstance(service, dict) else ""
        if str(host).startswith("azure.ai."):
            errors.append(f"schema: services/{name}: host {host} needs an extension schema this offline check does not have")
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        errors.append(f"schema: {where}: {error.message}")
    return errors


def hooks_of(document: dict):
    """(where, hook) for every hook, project-level and per service, in either form (one or a list)."""
    places = [("hooks", document.get("hooks") or {})]
    for name, service in (document.get("services") or {}).items():
        places.append((f"services/{name}/hooks", (service or {}).get("hooks") or {}))
    for where, hooks in places:
        for event, value in hooks.items():
            for hook in value if isinstance(value, list) else [value]:
                if isinstance(hook, dict):
                    yield f"{where}/{event}", hook


def project_errors(document: dict) -> list[str]:
    errors = []
    services = document.get("services") or {}
    functions = {n: s for n, s in services.items() if isinstance(s, dict) and s.get("host") == "function"}
    if not functions:
        errors.append("galbridge: no service with host: function: `azd deploy` would deploy nothing")
    for name, service in functions.items():
        if service.get("language") != "custom":
            errors.append(f"galbridge: services/{name}: language must be custom (azd has no Rust support)")
        if not str(service.get("dist", "")).endswith(".zip"):
            errors.append(f"galbridge: services/{name}: dist must name the zip infra/package.sh writes")
        prepackage = (service.get("hooks") or {}).get("prepackage")
        runs = [h.get("run", "") for h in (prepackage if isinstance(prepackage, list) else [prepackage]) if isinstance(h, dict)]
        if not any("infra/package.sh" in run for run in runs):
            errors.append(f"galbridge: services/{name}: no prepackage hook running infra/package.sh")
    for where, hook in hooks_of(document):
        for variant in [hook] + [hook[k] for k in ("posix", "windows") if isinstance(hook.get(k), dict)]:
            if re.search(r"(^|[\s;&|(])az\s", variant.get("run", "")):
                errors.append(f"galbridge: {where}: calls the Azure CLI, which needs its own login under azd")
    return errors


def errors_of(document: dict) -> list[str]:
    return schema_errors(document) + project_errors(document)


def self_test(document: dict) -> list[str]:
    def without_host(d):
        del d["services"]["galbridge"]["host"]

    def misspelt_hook_key(d):
        d["services"]["galbridge"]["hooks"]["prepackage"]["shel"] = "sh"

    def bad_shell(d):
        d["services"]["galbridge"]["hooks"]["prepackage"]["shell"] = "bash"

    def unknown_hook_event(d):
        d.setdefault("hooks", {})["postdeployy"] = {"shell": "sh", "run": "true"}

    def empty_services(d):
        d["services"] = {}

    def no_services(d):
        del d["services"]

    def az_hook(d):
        d.setdefault("hooks", {})["postprovision"] = {"shell": "sh", "run": "az functionapp deployment source config-zip --src x.zip"}

    def no_package_hook(d):
        del d["services"]["galbridge"]["hooks"]

    cases = {
        "a service without host (schema: required)": without_host,
        "a misspelt hook property (schema: additionalProperties)": misspelt_hook_key,
        "a hook shell azd does not know (schema: enum)": bad_shell,
        "a hook for a command that does not exist (schema: additionalProperties)": unknown_hook_event,
        "an empty services map (schema: minProperties)": empty_services,
        "no services at all (galbridge rule)": no_services,
        "a hook calling az (galbridge rule)": az_hook,
        "no prepackage hook (galbridge rule)": no_package_hook,
    }
    failures = []
    for label, mutate in cases.items():
        bad = copy.deepcopy(document)
        try:
            mutate(bad)
        except (KeyError, TypeError) as error:
            failures.append(f"self-test '{label}': azure.yaml no longer has the part to mutate ({error})")
            continue
        # The schema cases must be refused by the schema itself, the others by galbridge's rules.
        found = schema_errors(bad) if "(schema" in label else project_errors(bad)
        if found:
            print(f"azure.yaml: self-test '{label}': refused: {found[0]}")
        else:
            failures.append(f"self-test '{label}': accepted")
    return failures


def main() -> int:
    document = yaml.safe_load(AZURE_YAML.read_text())
    problems = errors_of(document)
    if "--self-test" in sys.argv[1:]:
        problems += self_test(document)
    for problem in problems:
        print(f"azure.yaml: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"azure.yaml: valid against azd's schema ({SCHEMA.relative_to(ROOT)}) and galbridge's azd rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
