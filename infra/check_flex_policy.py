#!/usr/bin/env python3
"""Policy test: the Bicep and Terraform sources follow the rules of Azure Functions Flex Consumption.

Each rule below cites where it comes from. They are read from the texts (comments stripped), with
no Bicep CLI, Terraform or Azure subscription, like infra/check_parity.py:

  flex-site-config     no siteConfig property ARM rejects on Flex sites (ftpsState, use32BitWorkerProcess,
                       netFrameworkVersion, preWarmedInstanceCount, functionAppScaleLimit,
                       functionsRuntimeScaleMonitoringEnabled): "The following site configuration
                       properties (Site.SiteConfig.FtpsState, …) for Flex Consumption sites is invalid"
                       (https://github.com/Azure/azure-cli/issues/31414,
                       https://github.com/microsoft/azure-pipelines-tasks/issues/21032,
                       https://github.com/Azure/azure-functions-host/issues/10643)
  flex-app-settings    no app setting Flex Consumption removed: FUNCTIONS_WORKER_RUNTIME,
                       FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE and the content-share settings
                       (https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations);
                       the runtime and the package location live in functionAppConfig instead
  instance-bounds      the maximum instance count can only be 40-1000: every bound, default, example
                       value and literal (https://learn.microsoft.com/azure/azure-functions/event-driven-scaling#flex-consumption-plan;
                       below 40 is a regional preview, https://github.com/Azure/azure-functions-host/issues/10523)
  instance-memory      instance memory is one of 512, 2048, 4096 MB
                       (https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#instance-memory)
  no-storage-key       no AzureWebJobsStorage connection string reaches the app: no exact `AzureWebJobsStorage`
                       setting, no account key, the identity settings present; Terraform: the azapi
                       workaround for the setting azurerm injects is present and re-runs on every change of
                       the app (https://github.com/hashicorp/terraform-provider-azurerm/issues/29693)
  storage-data-plane   Terraform with shared keys off: storage_use_azuread = true and
                       features.storage.data_plane_available = false, or the first apply fails with 403
                       reading queue properties (https://github.com/hashicorp/terraform-provider-azurerm/issues/27752)

Usage: python3 infra/check_flex_policy.py             # exit 0 when every rule holds
       python3 infra/check_flex_policy.py --self-test # also proves each rule fires on a bad sample
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent

FLEX_INVALID_SITE_CONFIG = {
    # Bicep (ARM) name: Terraform (azurerm site_config) name
    "ftpsState": "ftps_state",
    "use32BitWorkerProcess": "use_32_bit_worker",
    "netFrameworkVersion": "dotnet_version",
    "preWarmedInstanceCount": "pre_warmed_instance_count",
    "functionAppScaleLimit": "app_scale_limit",
    "functionsRuntimeScaleMonitoringEnabled": "runtime_scale_monitoring_enabled",
}
FLEX_REMOVED_SETTINGS = [
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
]
INSTANCE_MIN, INSTANCE_MAX = 40, 1000
MEMORY_SIZES = {512, 2048, 4096}


def strip_comments(text: str, line_markers: tuple[str, ...], quote: str) -> str:
    """The text without comments (line comments and /* */), keeping strings (which may hold '//')."""
    out = []
    i, in_string = 0, False
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                in_string = False
            i += 1
        elif ch == quote:
            in_string = True
            out.append(ch)
            i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end == -1 else end + 2
        elif any(text.startswith(marker, i) for marker in line_markers):
            end = text.find("\n", i)
            i = len(text) if end == -1 else end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def block_after(text: str, start: int) -> str:
    open_at = text.index("{", start)
    depth = 0
    for index in range(open_at, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : index]
    return text[open_at + 1 :]


class Sources:
    """Every Bicep, bicepparam, Terraform and tfvars-example file under infra/, comments stripped."""

    def __init__(self, files: dict[str, str]):
        self.files = files

    @staticmethod
    def read(infra: Path = INFRA) -> "Sources":
        files = {}
        for pattern in ("bicep/**/*.bicep", "bicep/**/*.bicepparam", "terraform/*.tf", "terraform/*.tfvars*"):
            for path in sorted(infra.glob(pattern)):
                files[str(path.relative_to(infra))] = path.read_text()
        return Sources(files)

    def code(self, name: str) -> str:
        text = self.files[name]
        if name.endswith((".bicep", ".bicepparam")):
            return strip_comments(text, ("//",), "'")
        return strip_comments(text, ("#", "//"), '"')

    def of_kind(self, *suffixes: str) -> list[tuple[str, str]]:
        return [(name, self.code(name)) for name in self.files if name.endswith(suffixes)]


# ---- Rules: each returns a list of problems --------------------------------------------------

def rule_flex_site_config(src: Sources) -> list[str]:
    problems = []
    for name, code in src.of_kind(".bicep"):
        for prop in FLEX_INVALID_SITE_CONFIG:
            if re.search(rf"^\s*{prop}\s*:", code, re.M):
                problems.append(f"{name}: siteConfig.{prop} is rejected on Flex Consumption sites")
    for name, code in src.of_kind(".tf"):
        for prop in FLEX_INVALID_SITE_CONFIG.values():
            if re.search(rf"^\s*{prop}\s*=", code, re.M):
                problems.append(f"{name}: site_config {prop} is rejected on Flex Consumption sites")
    return problems


def rule_flex_app_settings(src: Sources) -> list[str]:
    problems = []
    for name, code in src.of_kind(".bicep", ".tf"):
        for setting in FLEX_REMOVED_SETTINGS:
            if re.search(rf"(?<![A-Za-z0-9_]){setting}(?![A-Za-z0-9_])", code):
                problems.append(f"{name}: sets {setting}, which Flex Consumption does not accept")
    return problems


def _decorated_param(code: str, param: str) -> tuple[dict[str, str], str | None] | None:
    """The decorators (name -> argument text) and default of `param <param> int`, or None."""
    match = re.search(rf"((?:^@.*\n(?:^\s+.*\n|^\]\)\n)*)*)^param\s+{param}\s+int(?:\s*=\s*(\S+))?", code, re.M)
    if not match:
        return None
    decorators = {}
    for deco in re.finditer(r"^@(\w+)\((.*?)\)\s*$", match.group(1), re.M | re.S):
        decorators[deco.group(1)] = deco.group(2)
    return decorators, match.group(2)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"\d+", text.strip()) else None


def rule_instance_bounds(src: Sources) -> list[str]:
    problems = []
    in_range = lambda n: INSTANCE_MIN <= n <= INSTANCE_MAX  # noqa: E731
    for name, code in src.of_kind(".bicep"):
        found = _decorated_param(code, "maximumInstanceCount")
        if found:
            decorators, default = found
            low, high = _int_or_none(decorators.get("minValue")), _int_or_none(decorators.get("maxValue"))
            if low is None or low < INSTANCE_MIN:
                problems.append(f"{name}: maximumInstanceCount needs @minValue({INSTANCE_MIN}) or more (has {low})")
            if high is None or high > INSTANCE_MAX:
                problems.append(f"{name}: maximumInstanceCount needs @maxValue({INSTANCE_MAX}) or less (has {high})")
            value = _int_or_none(default)
            if default is not None and value is not None and not in_range(value):
                problems.append(f"{name}: maximumInstanceCount defaults to {value}, outside {INSTANCE_MIN}-{INSTANCE_MAX}")
        for literal in re.finditer(r"maximumInstanceCount:\s*(\d+)", code):
            if not in_range(int(literal.group(1))):
                problems.append(f"{name}: maximumInstanceCount: {literal.group(1)} is outside {INSTANCE_MIN}-{INSTANCE_MAX}")
    for name, code in src.of_kind(".bicepparam"):
        for value in re.finditer(r"^param\s+maximumInstanceCount\s*=\s*(\d+)", code, re.M):
            if not in_range(int(value.group(1))):
                problems.append(f"{name}: maximumInstanceCount = {value.group(1)} is outside {INSTANCE_MIN}-{INSTANCE_MAX}")
    if not any(_decorated_param(code, "maximumInstanceCount") for _, code in src.of_kind(".bicep")):
        problems.append("Bicep: no `param maximumInstanceCount int` to hold the bounds")

    variables = [(n, c) for n, c in src.of_kind(".tf") if re.search(r'variable\s+"maximum_instance_count"', c)]
    if not variables:
        problems.append('Terraform: no variable "maximum_instance_count"')
    for name, code in variables:
        body = block_after(code, re.search(r'variable\s+"maximum_instance_count"', code).end())
        low = re.search(r"var\.maximum_instance_count\s*>=\s*(\d+)", body)
        high = re.search(r"var\.maximum_instance_count\s*<=\s*(\d+)", body)
        if not (low and int(low.group(1)) >= INSTANCE_MIN):
            problems.append(f"{name}: maximum_instance_count needs a validation `>= {INSTANCE_MIN}`")
        if not (high and int(high.group(1)) <= INSTANCE_MAX):
            problems.append(f"{name}: maximum_instance_count needs a validation `<= {INSTANCE_MAX}`")
        default = re.search(r"^\s*default\s*=\s*(\d+)", body, re.M)
        if default and not in_range(int(default.group(1))):
            problems.append(f"{name}: maximum_instance_count defaults to {default.group(1)}")
    for name, code in src.of_kind(".tf", ".example"):
        for literal in re.finditer(r"^\s*maximum_instance_count\s*=\s*(\d+)", code, re.M):
            if not in_range(int(literal.group(1))):
                problems.append(f"{name}: maximum_instance_count = {literal.group(1)} is outside {INSTANCE_MIN}-{INSTANCE_MAX}")
    return problems


def rule_instance_memory(src: Sources) -> list[str]:
    problems = []
    found_any = False
    for name, code in src.of_kind(".bicep"):
        found = _decorated_param(code, "instanceMemoryMB")
        if not found:
            continue
        found_any = True
        decorators, default = found
        allowed = {int(n) for n in re.findall(r"\d+", decorators.get("allowed", ""))}
        if not allowed or not allowed <= MEMORY_SIZES:
            problems.append(f"{name}: instanceMemoryMB needs @allowed within {sorted(MEMORY_SIZES)} (has {sorted(allowed)})")
        value = _int_or_none(default)
        if value is not None and value not in MEMORY_SIZES:
            problems.append(f"{name}: instanceMemoryMB defaults to {value}")
    if not found_any:
        problems.append("Bicep: no `param instanceMemoryMB int`")
    for name, code in src.of_kind(".bicep"):
        for literal in re.finditer(r"instanceMemoryMB:\s*(\d+)", code):
            if int(literal.group(1)) not in MEMORY_SIZES:
                problems.append(f"{name}: instanceMemoryMB: {literal.group(1)} is not one of {sorted(MEMORY_SIZES)}")
    for name, code in src.of_kind(".bicepparam"):
        for value in re.finditer(r"^param\s+instanceMemoryMB\s*=\s*(\d+)", code, re.M):
            if int(value.group(1)) not in MEMORY_SIZES:
                problems.append(f"{name}: instanceMemoryMB = {value.group(1)} is not one of {sorted(MEMORY_SIZES)}")

    variables = [(n, c) for n, c in src.of_kind(".tf") if re.search(r'variable\s+"instance_memory_in_mb"', c)]
    if not variables:
        problems.append('Terraform: no variable "instance_memory_in_mb"')
    for name, code in variables:
        body = block_after(code, re.search(r'variable\s+"instance_memory_in_mb"', code).end())
        allowed = re.search(r"contains\(\[([^\]]*)\],\s*var\.instance_memory_in_mb\)", body)
        sizes = {int(n) for n in re.findall(r"\d+", allowed.group(1))} if allowed else set()
        if not sizes or not sizes <= MEMORY_SIZES:
            problems.append(f"{name}: instance_memory_in_mb needs a validation within {sorted(MEMORY_SIZES)} (has {sorted(sizes)})")
        default = re.search(r"^\s*default\s*=\s*(\d+)", body, re.M)
        if default and int(default.group(1)) not in MEMORY_SIZES:
            problems.append(f"{name}: instance_memory_in_mb defaults to {default.group(1)}")
    for name, code in src.of_kind(".tf", ".example"):
        for literal in re.finditer(r"^\s*instance_memory_in_mb\s*=\s*(\d+)", code, re.M):
            if int(literal.group(1)) not in MEMORY_SIZES:
                problems.append(f"{name}: instance_memory_in_mb = {literal.group(1)} is not one of {sorted(MEMORY_SIZES)}")
    return problems


def rule_no_storage_key(src: Sources) -> list[str]:
    problems = []
    exact = r"(?<![A-Za-z0-9_])['\"]?AzureWebJobsStorage['\"]?\s*[:=]"
    for name, code in src.of_kind(".bicep", ".tf"):
        if re.search(exact, code):
            problems.append(f"{name}: sets AzureWebJobsStorage itself (a connection string wins over the identity settings)")
        for key_use in ("AccountKey=", "listKeys(", "primary_access_key", "storage_access_key"):
            if key_use in code:
                problems.append(f"{name}: uses a storage account key ({key_use}); shared keys are off")
    bicep = "\n".join(code for _, code in src.of_kind(".bicep"))
    terraform = "\n".join(code for _, code in src.of_kind(".tf"))
    for side, code in (("Bicep", bicep), ("Terraform", terraform)):
        for needed in ("AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId"):
            if needed not in code:
                problems.append(f"{side}: no {needed}: the host would have no identity-based storage connection")

    app = re.search(r'resource\s+"azurerm_function_app_flex_consumption"\s+"(\w+)"', terraform)
    if not app:
        return problems + ["Terraform: no azurerm_function_app_flex_consumption"]
    app_ref = f"azurerm_function_app_flex_consumption.{app.group(1)}"
    auth = re.search(r'storage_authentication_type\s*=\s*"(\w+)"', block_after(terraform, app.end()))
    if auth and auth.group(1) == "StorageAccountConnectionString":
        problems.append("Terraform: storage_authentication_type is StorageAccountConnectionString; shared keys are off")
    workaround = None
    for action in re.finditer(r'resource\s+"azapi_resource_action"\s+"\w+"', terraform):
        body = block_after(terraform, action.end())
        if re.search(r'resource_id\s*=\s*"\$\{' + re.escape(app_ref) + r'\.id\}/config/appsettings"', body):
            workaround = body
    if workaround is None:
        problems.append(
            f"Terraform: no azapi_resource_action replacing {app_ref}'s app settings "
            "(…/config/appsettings): azurerm's injected AzureWebJobsStorage would reach the app (#29693)"
        )
    else:
        if not re.search(r'method\s*=\s*"PUT"', workaround):
            problems.append("Terraform: the app-settings workaround must PUT (replace) the settings, not merge them")
        if not re.search(r"replace_triggered_by\s*=\s*\[[^\]]*" + re.escape(app_ref) + r"\s*[,\]]", workaround):
            problems.append(f"Terraform: the app-settings workaround must be replace_triggered_by {app_ref} (azurerm re-injects on every update)")
    if not re.search(r'azapi\s*=\s*\{[^}]*source\s*=\s*"Azure/azapi"', terraform):
        problems.append("Terraform: the Azure/azapi provider is not in required_providers")
    return problems


def rule_storage_data_plane(src: Sources) -> list[str]:
    terraform = "\n".join(code for _, code in src.of_kind(".tf"))
    if not re.search(r"shared_access_key_enabled\s*=\s*false", terraform):
        return []
    problems = []
    if not re.search(r"storage_use_azuread\s*=\s*true", terraform):
        problems.append("Terraform: shared keys are off but the provider does not set storage_use_azuread = true")
    storage = re.search(r"features\s*\{", terraform)
    features = block_after(terraform, storage.end() - 1) if storage else ""
    if not re.search(r"storage\s*\{[^}]*data_plane_available\s*=\s*false", features):
        problems.append(
            "Terraform: shared keys are off but features.storage.data_plane_available is not false: the first "
            "apply reads queue properties over the data plane and fails with 403 (#27752)"
        )
    return problems


RULES = {
    "flex-site-config": rule_flex_site_config,
    "flex-app-settings": rule_flex_app_settings,
    "instance-bounds": rule_instance_bounds,
    "instance-memory": rule_instance_memory,
    "no-storage-key": rule_no_storage_key,
    "storage-data-plane": rule_storage_data_plane,
}

# Bad samples: (rule that must fire, file, text to find, replacement). Each is applied alone to the
# real sources; the named rule must then report a problem.
BAD_SAMPLES = [
    ("flex-site-config", "bicep/modules/functionapp.bicep", "      http20Enabled: true\n", "      http20Enabled: true\n      ftpsState: 'Disabled'\n"),
    ("flex-site-config", "terraform/functionapp.tf", "    http2_enabled                          = true\n", "    http2_enabled = true\n    ftps_state = \"Disabled\"\n"),
    ("flex-app-settings", "bicep/modules/functionapp.bicep", "  GALBRIDGE_CONFIG: configPath\n", "  GALBRIDGE_CONFIG: configPath\n  FUNCTIONS_WORKER_RUNTIME: 'custom'\n"),
    ("flex-app-settings", "terraform/functionapp.tf", "    GALBRIDGE_SCHEDULE ", "    WEBSITE_RUN_FROM_PACKAGE = \"1\"\n    GALBRIDGE_SCHEDULE "),
    ("flex-app-settings", "bicep/modules/functionapp.bicep", "  GALBRIDGE_CONFIG: configPath\n", "  GALBRIDGE_CONFIG: configPath\n  WEBSITE_CONTENTSHARE: 'galbridge'\n"),
    ("instance-bounds", "bicep/main.bicep", "@minValue(40)\n@maxValue(1000)\nparam maximumInstanceCount", "@minValue(1)\n@maxValue(1000)\nparam maximumInstanceCount"),
    ("instance-bounds", "bicep/main.bicep", "@minValue(40)\n@maxValue(1000)\nparam maximumInstanceCount", "@minValue(40)\n@maxValue(2000)\nparam maximumInstanceCount"),
    ("instance-bounds", "bicep/main.example.bicepparam", "param maximumInstanceCount = 40", "param maximumInstanceCount = 10"),
    ("instance-bounds", "terraform/variables.tf", "var.maximum_instance_count >= 40", "var.maximum_instance_count >= 1"),
    ("instance-bounds", "terraform/terraform.tfvars.example", "maximum_instance_count   = 40", "maximum_instance_count   = 5"),
    ("instance-memory", "bicep/main.bicep", "param instanceMemoryMB int = 2048", "param instanceMemoryMB int = 1024"),
    ("instance-memory", "bicep/main.bicep", "@allowed([\n  512\n  2048\n  4096\n])\nparam instanceMemoryMB", "@allowed([\n  512\n  1536\n  2048\n])\nparam instanceMemoryMB"),
    ("instance-memory", "terraform/variables.tf", "contains([512, 2048, 4096], var.instance_memory_in_mb)", "contains([512, 1024, 2048, 4096], var.instance_memory_in_mb)"),
    ("instance-memory", "terraform/terraform.tfvars.example", "instance_memory_in_mb    = 2048", "instance_memory_in_mb    = 3072"),
    ("no-storage-key", "bicep/modules/functionapp.bicep", "  AzureWebJobsStorage__accountName: storageAccountName\n", "  AzureWebJobsStorage: 'DefaultEndpointsProtocol=https;AccountName=${storageAccountName}'\n"),
    ("no-storage-key", "terraform/functionapp.tf", 'resource "azapi_resource_action" "app_settings_without_webjobs_storage"', 'resource "azapi_update_resource" "app_settings_without_webjobs_storage"'),
    ("no-storage-key", "terraform/functionapp.tf", '/config/appsettings"', '/config/web"'),
    ("no-storage-key", "terraform/functionapp.tf", 'method      = "PUT"', 'method      = "PATCH"'),
    ("no-storage-key", "terraform/functionapp.tf", "replace_triggered_by = [azurerm_function_app_flex_consumption.galbridge]", "replace_triggered_by = []"),
    ("no-storage-key", "terraform/functionapp.tf", '    AzureWebJobsStorage__credential ', '    AzureWebJobsStorage = ""\n    AzureWebJobsStorage__credential '),
    ("no-storage-key", "terraform/functionapp.tf", 'storage_authentication_type       = "UserAssignedIdentity"', 'storage_authentication_type       = "StorageAccountConnectionString"'),
    ("storage-data-plane", "terraform/versions.tf", "data_plane_available = false", "data_plane_available = true"),
    ("storage-data-plane", "terraform/versions.tf", "storage_use_azuread = true", "storage_use_azuread = false"),
]


def check(src: Sources) -> dict[str, list[str]]:
    return {rule: fn(src) for rule, fn in RULES.items()}


def self_test() -> list[str]:
    pristine = Sources.read()
    failures = []
    fired = {rule: 0 for rule in RULES}
    for rule, name, old, new in BAD_SAMPLES:
        if name not in pristine.files or old not in pristine.files[name]:
            failures.append(f"self-test {rule}: the text to mutate is gone from {name} ({old!r})")
            continue
        mutated = Sources({**pristine.files, name: pristine.files[name].replace(old, new, 1)})
        if check(mutated)[rule]:
            fired[rule] += 1
        else:
            failures.append(f"self-test {rule}: the bad sample in {name} ({new.strip()!r}) went unnoticed")
    for rule, count in fired.items():
        if count == 0:
            failures.append(f"self-test: rule {rule} has no bad sample that makes it fire")
    if not failures:
        print(f"flex-policy: self-test: {len(BAD_SAMPLES)} bad samples, each caught by its rule")
    return failures


def main() -> int:
    results = check(Sources.read())
    problems = [f"[{rule}] {p}" for rule, found in results.items() for p in found]
    if "--self-test" in sys.argv[1:]:
        problems += self_test()
    for problem in problems:
        print(f"flex-policy: {problem}", file=sys.stderr)
    if problems:
        print(f"flex-policy: {len(problems)} problems", file=sys.stderr)
        return 1
    print(f"flex-policy: {len(RULES)} Flex Consumption rules hold over {len(Sources.read().files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
