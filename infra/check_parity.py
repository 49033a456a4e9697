#!/usr/bin/env python3
"""Checks that infra/bicep and infra/terraform declare the same deployment contract.

Compared, by parsing both texts (no Bicep CLI or Terraform needed, nothing leaves the machine):
- the function app's app settings: the same names, the same literal values, and the same defaults
  for the operator-tunable ones (schedule, config path, state table name);
- the role assignments: the same (role definition id, scope, principal, conditional) tuples, and
  they include the least-privilege set issue 6 asks for;
- the Flex Consumption runtime: custom 1.0 on both sides.

Usage: python3 infra/check_parity.py            # exit 0 when both sides agree
       python3 infra/check_parity.py --self-test # also proves each check fails on a divergence
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

INFRA = Path(__file__).resolve().parent

# How each side names the resource a role is scoped to. A scope missing here is an error, not a guess.
BICEP_SCOPE_KINDS = {
    "Microsoft.Storage/storageAccounts": "storage-account",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "blob-container",
    "Microsoft.Storage/storageAccounts/tableServices/tables": "table",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "queue",
    "Microsoft.KeyVault/vaults": "key-vault",
    "Microsoft.Insights/components": "app-insights",
}
TERRAFORM_SCOPE_KINDS = {
    "azurerm_storage_account": "storage-account",
    "azurerm_storage_container": "blob-container",
    "azurerm_storage_table": "table",
    "azurerm_storage_queue": "queue",
    "azurerm_key_vault": "key-vault",
    "azurerm_application_insights": "app-insights",
}

# Issue 6 / docs/microsoft-facts.md §9: what galbridge's identity must hold, at the narrowest scope.
REQUIRED_APP_ROLES = {
    ("0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "table", "app"),  # Storage Table Data Contributor
    ("b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "storage-account", "app"),  # Storage Blob Data Owner
    ("4633458b-17de-408a-b874-0445c86b69e6", "key-vault", "app"),  # Key Vault Secrets User
    ("3913510d-42f4-4e42-8a64-420c390055eb", "app-insights", "app"),  # Monitoring Metrics Publisher
    # The shard queue and its poison queue (docs/microsoft-facts.md §13).
    ("c6a89b2d-59bc-44d0-9896-0f6e12d7b80a", "queue", "app"),  # Storage Queue Data Message Sender
    ("8a0f0c08-91a1-4084-bc3d-661d67233fed", "queue", "app"),  # Storage Queue Data Message Processor
    ("19e7f393-937e-4f77-808e-94535e297925", "queue", "app"),  # Storage Queue Data Reader
}

# The settings the binary and the host read (the deployment contract).
REQUIRED_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AZURE_CLIENT_ID",
    "GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID",
    "GALBRIDGE_CONFIG",
    "GALBRIDGE_SCHEDULE",
    "GALBRIDGE_KEY_VAULT_URL",
    "GALBRIDGE_STATE_TABLE_ENDPOINT",
    "GALBRIDGE_STATE_TABLE_NAME",
    "GALBRIDGE_QUEUE__queueServiceUri",
    "GALBRIDGE_QUEUE__credential",
    "GALBRIDGE_QUEUE__clientId",
}
# Operator-tunable parameters: (Bicep param, Terraform variable, the binary's own default or None).
TUNABLES = [
    ("schedule", "schedule", "0 */15 * * * *"),
    ("configPath", "config_path", "galbridge.toml"),
    ("stateTableName", "state_table_name", "galbridge"),
    ("deploymentContainerName", "deployment_container_name", None),
]
# Flex Consumption rejects these (docs/microsoft-facts.md §9).
FORBIDDEN_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE", "AzureWebJobsStorage"}


class ParseError(Exception):
    """The text does not have the shape this checker reads; fix the checker or the file."""


@dataclass(frozen=True)
class Setting:
    """An app setting: its literal value when it is one, else the default of the parameter or
    variable it comes from (None when it is computed from a resource)."""

    literal: str | None
    default: str | None


@dataclass(frozen=True)
class RoleAssignment:
    role_id: str
    scope: str
    principal: str
    conditional: bool


def block_after(text: str, start: int) -> str:
    """The text of the brace-balanced block whose `{` is at or after `start`."""
    open_at = text.index("{", start)
    depth = 0
    for index in range(open_at, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : index]
    raise ParseError("unbalanced braces")


# ---- Bicep -------------------------------------------------------------------------------------

def bicep_params(text: str) -> dict[str, str | None]:
    """param name -> default value when it is a plain string literal."""
    params = {}
    for match in re.finditer(r"^param\s+(\w+)\s+\w+(?:\s*=\s*(.+))?$", text, re.M):
        default = match.group(2)
        literal = re.fullmatch(r"'([^']*)'", default.strip()) if default else None
        params[match.group(1)] = literal.group(1) if literal else None
    return params


def bicep_module_params(main: str, module_file: str) -> dict[str, str]:
    """The expressions main.bicep passes to the module loaded from `module_file`."""
    match = re.search(r"module\s+\w+\s+'" + re.escape(module_file) + r"'", main)
    if not match:
        raise ParseError(f"main.bicep does not use {module_file}")
    body = block_after(main, match.end())
    params = block_after(body, body.index("params:"))
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s*(\w+):\s*(.+)$", params, re.M)}


def bicep_settings(main: str, functionapp: str) -> dict[str, Setting]:
    match = re.search(r"^var appSettings = ", functionapp, re.M)
    if not match:
        raise ParseError("functionapp.bicep has no `var appSettings = {…}`")
    body = block_after(functionapp, match.end())
    passed = bicep_module_params(main, "modules/functionapp.bicep")
    main_params = bicep_params(main)
    settings = {}
    for entry in re.finditer(r"^\s*(\w+):\s*(.+)$", body, re.M):
        name, expression = entry.group(1), entry.group(2).strip()
        literal = re.fullmatch(r"'([^'$]*)'", expression)
        default = None
        # module param -> the expression main.bicep passes -> a main param's default
        if expression in passed and passed[expression] in main_params:
            default = main_params[passed[expression]]
        settings[name] = Setting(literal.group(1) if literal else None, default)
    return settings


def bicep_roles(roles: str) -> set[RoleAssignment]:
    ids_match = re.search(r"^var roleIds = ", roles, re.M)
    if not ids_match:
        raise ParseError("roles.bicep has no `var roleIds = {…}`")
    role_ids = dict(re.findall(r"(\w+):\s*'([0-9a-f-]{36})'", block_after(roles, ids_match.end())))
    types = dict(re.findall(r"^resource\s+(\w+)\s+'([^@']+)@[^']+'\s+existing", roles, re.M))
    assignments = set()
    pattern = r"^resource\s+(\w+)\s+'Microsoft\.Authorization/roleAssignments@[^']+'\s*=\s*(if\s*\(.*?\)\s*)?"
    for match in re.finditer(pattern, roles, re.M):
        body = block_after(roles, match.end())
        scope = re.search(r"^\s*scope:\s*(\w+)\s*$", body, re.M)
        role = re.search(r"roleDefinitionId:.*roleIds\.(\w+)", body)
        principal = re.search(r"principalId:\s*(\w+)", body)
        if not (scope and role and principal):
            raise ParseError(f"role assignment {match.group(1)}: scope, roleDefinitionId or principalId unreadable")
        resource_type = types.get(scope.group(1))
        if resource_type not in BICEP_SCOPE_KINDS:
            raise ParseError(f"role assignment {match.group(1)}: unknown scope {scope.group(1)} ({resource_type})")
        principals = {"identityPrincipalId": "app", "operatorPrincipalId": "operator"}
        if principal.group(1) not in principals:
            raise ParseError(f"role assignment {match.group(1)}: unknown principal {principal.group(1)}")
        if role.group(1) not in role_ids:
            raise ParseError(f"role assignment {match.group(1)}: roleIds.{role.group(1)} is not defined")
        assignments.add(
            RoleAssignment(
                role_ids[role.group(1)],
                BICEP_SCOPE_KINDS[resource_type],
                principals[principal.group(1)],
                match.group(2) is not None,
            )
        )
    return assignments


# ---- Terraform ---------------------------------------------------------------------------------

def terraform_defaults(variables: str) -> dict[str, str | None]:
    defaults = {}
    for match in re.finditer(r'^variable\s+"(\w+)"\s*', variables, re.M):
        body = block_after(variables, match.end())
        default = re.search(r'^\s*default\s*=\s*"([^"]*)"\s*$', body, re.M)
        defaults[match.group(1)] = default.group(1) if default else None
    return defaults


def terraform_function_app(functionapp: str) -> str:
    match = re.search(r'resource\s+"azurerm_function_app_flex_consumption"\s+"\w+"\s*', functionapp)
    if not match:
        raise ParseError("functionapp.tf has no azurerm_function_app_flex_consumption")
    return block_after(functionapp, match.end())


def terraform_settings(functionapp: str, variables: str) -> dict[str, Setting]:
    app = terraform_function_app(functionapp)
    match = re.search(r"^\s*app_settings\s*=\s*", app, re.M)
    if not match:
        raise ParseError("the function app has no app_settings map")
    body = block_after(app, match.end())
    defaults = terraform_defaults(variables)
    settings = {}
    for entry in re.finditer(r"^\s*(\w+)\s*=\s*(.+)$", body, re.M):
        name, expression = entry.group(1), entry.group(2).strip()
        literal = re.fullmatch(r'"([^"$]*)"', expression)
        variable = re.fullmatch(r"var\.(\w+)", expression)
        default = defaults.get(variable.group(1)) if variable else None
        settings[name] = Setting(literal.group(1) if literal else None, default)
    # Provider quirk (see functionapp.tf): this setting is written from site_config.
    if re.search(r"^\s*application_insights_connection_string\s*=", app, re.M):
        settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] = Setting(None, None)
    return settings


def terraform_roles(roles: str) -> set[RoleAssignment]:
    ids_match = re.search(r"^\s*role_ids\s*=\s*", roles, re.M)
    if not ids_match:
        raise ParseError("roles.tf has no `role_ids = {…}` local")
    role_ids = dict(re.findall(r'(\w+)\s*=\s*"([0-9a-f-]{36})"', block_after(roles, ids_match.end())))
    assignments = set()
    for match in re.finditer(r'^resource\s+"azurerm_role_assignment"\s+"(\w+)"\s*', roles, re.M):
        name = match.group(1)
        body = block_after(roles, match.end())
        scope = re.search(r"^\s*scope\s*=\s*(azurerm_\w+)\.\w+\.(?:id|resource_manager_id)\s*$", body, re.M)
        role = re.search(r"role_definition_id\s*=.*local\.role_ids\.(\w+)", body)
        principal = re.search(r"^\s*principal_id\s*=\s*(\S+)\s*$", body, re.M)
        if not (scope and role and principal):
            raise ParseError(f"role assignment {name}: scope, role_definition_id or principal_id unreadable")
        if scope.group(1) not in TERRAFORM_SCOPE_KINDS:
            raise ParseError(f"role assignment {name}: unknown scope {scope.group(1)}")
        if re.fullmatch(r"azurerm_user_assigned_identity\.\w+\.principal_id", principal.group(1)):
            who = "app"
        elif principal.group(1) == "var.operator_principal_id":
            who = "operator"
        else:
            raise ParseError(f"role assignment {name}: unknown principal {principal.group(1)}")
        if role.group(1) not in role_ids:
            raise ParseError(f"role assignment {name}: local.role_ids.{role.group(1)} is not defined")
        conditional = re.search(r"^\s*(count|for_each)\s*=", body, re.M) is not None
        assignments.add(RoleAssignment(role_ids[role.group(1)], TERRAFORM_SCOPE_KINDS[scope.group(1)], who, conditional))
    return assignments


# ---- Comparison --------------------------------------------------------------------------------

@dataclass
class Sources:
    bicep_main: str
    bicep_functionapp: str
    bicep_roles: str
    tf_functionapp: str
    tf_variables: str
    tf_roles: str

    @staticmethod
    def read(infra: Path = INFRA) -> "Sources":
        return Sources(
            (infra / "bicep/main.bicep").read_text(),
            (infra / "bicep/modules/functionapp.bicep").read_text(),
            (infra / "bicep/modules/roles.bicep").read_text(),
            (infra / "terraform/functionapp.tf").read_text(),
            (infra / "terraform/variables.tf").read_text(),
            (infra / "terraform/roles.tf").read_text(),
        )


def compare(sources: Sources) -> tuple[list[str], int]:
    """Returns (problems, number of checks made)."""
    problems: list[str] = []
    checks = 0
    bicep = bicep_settings(sources.bicep_main, sources.bicep_functionapp)
    terraform = terraform_settings(sources.tf_functionapp, sources.tf_variables)

    checks += 1
    for name in sorted(set(bicep) ^ set(terraform)):
        side = "Bicep" if name in bicep else "Terraform"
        problems.append(f"app setting {name} is only in {side}")
    for side, settings in (("Bicep", bicep), ("Terraform", terraform)):
        checks += 2
        for name in sorted(REQUIRED_SETTINGS - set(settings)):
            problems.append(f"{side} lacks the app setting {name} the binary or host reads")
        for name in sorted(FORBIDDEN_SETTINGS & set(settings)):
            problems.append(f"{side} sets {name}, which Flex Consumption rejects (or which would bring back account keys)")
    for name in sorted(set(bicep) & set(terraform)):
        checks += 1
        if bicep[name] != terraform[name]:
            problems.append(f"app setting {name}: Bicep {bicep[name]} vs Terraform {terraform[name]}")
    bicep_defaults = bicep_params(sources.bicep_main)
    tf_defaults = terraform_defaults(sources.tf_variables)
    for bicep_param, tf_variable, contract_default in TUNABLES:
        checks += 1
        sides = {"Bicep": bicep_defaults.get(bicep_param), "Terraform": tf_defaults.get(tf_variable)}
        for side, default in sides.items():
            if contract_default is not None and default != contract_default:
                problems.append(f"{side} default of {bicep_param}/{tf_variable} is {default!r}, the binary's is {contract_default!r}")
        if sides["Bicep"] != sides["Terraform"]:
            problems.append(f"defaults differ: Bicep {bicep_param}={sides['Bicep']!r}, Terraform {tf_variable}={sides['Terraform']!r}")

    bicep_assignments = bicep_roles(sources.bicep_roles)
    terraform_assignments = terraform_roles(sources.tf_roles)
    checks += 1
    for assignment in sorted(bicep_assignments ^ terraform_assignments, key=str):
        side = "Bicep" if assignment in bicep_assignments else "Terraform"
        problems.append(f"role assignment only in {side}: {assignment}")
    for side, assignments in (("Bicep", bicep_assignments), ("Terraform", terraform_assignments)):
        checks += 1
        held = {(a.role_id, a.scope, a.principal) for a in assignments if not a.conditional}
        for missing in sorted(REQUIRED_APP_ROLES - held):
            problems.append(f"{side} lacks the required role assignment {missing}")

    checks += 1
    bicep_runtime = re.search(r"runtime:\s*\{\s*name:\s*'(\w+)'\s*version:\s*'([^']+)'", sources.bicep_functionapp)
    app = terraform_function_app(sources.tf_functionapp)
    tf_name = re.search(r'runtime_name\s*=\s*"(\w+)"', app)
    tf_version = re.search(r'runtime_version\s*=\s*"([^"]+)"', app)
    runtimes = {
        "Bicep": bicep_runtime.groups() if bicep_runtime else None,
        "Terraform": (tf_name.group(1), tf_version.group(1)) if tf_name and tf_version else None,
    }
    for side, runtime in runtimes.items():
        if runtime != ("custom", "1.0"):
            problems.append(f"{side} runtime is {runtime}, not custom 1.0 (the custom handler)")
    return problems, checks


def self_test() -> list[str]:
    """Each mutation makes the two sides diverge; compare() must notice every one."""
    pristine = Sources.read()
    mutations = {
        "a setting dropped from Terraform": ("tf_functionapp", "    GALBRIDGE_STATE_TABLE_NAME ", "    # "),
        "a setting renamed in Bicep": ("bicep_functionapp", "GALBRIDGE_KEY_VAULT_URL:", "GALBRIDGE_VAULT_URL:"),
        "a literal value changed": ("bicep_functionapp", "'managedidentity'", "'msi'"),
        "a default schedule changed": ("tf_variables", '"0 */15 * * * *"', '"0 */5 * * * *"'),
        "a default container renamed": ("bicep_main", "'app-package'", "'deploy'"),
        "a role widened to the account": (
            "tf_roles",
            "azurerm_storage_table.state.resource_manager_id",
            "azurerm_storage_account.galbridge.id",
        ),
        "a role id mistyped": ("bicep_roles", "'4633458b-17de-408a-b874-0445c86b69e6'", "'4633458b-17de-408a-b874-0445c86b69e7'"),
        "an operator role made unconditional": ("tf_roles", "  count              = var.operator_principal_id", "  # count = var.operator_principal_id"),
        "a worker runtime setting added": ("tf_functionapp", "    AZURE_CLIENT_ID ", '    FUNCTIONS_WORKER_RUNTIME = "custom"\n    AZURE_CLIENT_ID '),
        "the runtime changed": ("bicep_functionapp", "name: 'custom'", "name: 'node'"),
    }
    failures = []
    for label, (field, old, new) in mutations.items():
        text = getattr(pristine, field)
        if old not in text:
            failures.append(f"self-test '{label}': the text to mutate is gone ({old!r})")
            continue
        mutated = Sources(**{**pristine.__dict__, field: text.replace(old, new, 1)})
        try:
            problems, _ = compare(mutated)
        except ParseError as error:
            problems = [str(error)]
        if not problems:
            failures.append(f"self-test '{label}': the divergence went unnoticed")
    return failures


def main() -> int:
    try:
        problems, checks = compare(Sources.read())
    except ParseError as error:
        print(f"parity: cannot read the infrastructure code: {error}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"parity: {problem}", file=sys.stderr)
    if "--self-test" in sys.argv[1:]:
        failures = self_test()
        for failure in failures:
            print(f"parity: {failure}", file=sys.stderr)
        problems += failures
    if problems:
        print(f"parity: Bicep and Terraform diverge ({len(problems)} problems)", file=sys.stderr)
        return 1
    print(f"parity: Bicep and Terraform agree ({checks} checks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
