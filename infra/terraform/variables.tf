variable "resource_group_name" {
  description = "Existing resource group to deploy into (create it first: az group create -n rg-galbridge -l westeurope)."
  type        = string
}

variable "location" {
  description = "Azure region for every resource; must offer Flex Consumption. Empty: the resource group's region."
  type        = string
  default     = ""
}

variable "base_name" {
  description = "Short name the resource names are built from (lowercase letters and digits, 3-10)."
  type        = string
  default     = "galbridge"

  validation {
    condition     = can(regex("^[a-z0-9]{3,10}$", var.base_name))
    error_message = "base_name must be 3-10 lowercase letters or digits."
  }
}

variable "name_suffix" {
  description = "Suffix that makes the global names (storage, Key Vault, function app) unique; 4-8 lowercase letters or digits. Keep it stable."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{4,8}$", var.name_suffix))
    error_message = "name_suffix must be 4-8 lowercase letters or digits."
  }
}

variable "schedule" {
  description = "Sync schedule: 6-field NCRONTAB in UTC (second minute hour day month day-of-week). Sets GALBRIDGE_SCHEDULE."
  type        = string
  default     = "0 */15 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.schedule))) == 6
    error_message = "schedule must have 6 space-separated fields (second minute hour day month day-of-week)."
  }
}

variable "config_path" {
  description = "Path of the operator configuration inside the package, relative to the app root. Sets GALBRIDGE_CONFIG."
  type        = string
  default     = "galbridge.toml"
}

variable "state_table_name" {
  description = "Name of the Table Storage table holding sync state. Sets GALBRIDGE_STATE_TABLE_NAME."
  type        = string
  default     = "galbridge"
}

variable "deployment_container_name" {
  description = "Blob container Flex Consumption deploys the package into."
  type        = string
  default     = "app-package"
}

variable "storage_replication_type" {
  description = "Storage redundancy: LRS, ZRS, GRS or GZRS."
  type        = string
  default     = "LRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "GZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be LRS, ZRS, GRS or GZRS."
  }
}

variable "maximum_instance_count" {
  description = "Most instances the app may scale out to (40-1000). A sync run holds a per-link lease, so more instances do not mean more parallel writes."
  type        = number
  default     = 40

  # azurerm 4.58+ accepts 1-1000 (https://github.com/hashicorp/terraform-provider-azurerm/pull/31392),
  # but Flex Consumption only accepts values below 40 as a regional preview
  # (https://github.com/Azure/azure-functions-host/issues/10523); elsewhere ARM rejects them at apply
  # time. Same bounds as maximumInstanceCount in infra/bicep/main.bicep.
  validation {
    condition     = var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000 && floor(var.maximum_instance_count) == var.maximum_instance_count
    error_message = "maximum_instance_count must be a whole number from 40 to 1000 (Flex Consumption's limits)."
  }
}

variable "instance_memory_in_mb" {
  description = "Memory of each instance in MB: 512, 2048 or 4096."
  type        = number
  default     = 2048

  validation {
    condition     = contains([512, 2048, 4096], var.instance_memory_in_mb)
    error_message = "instance_memory_in_mb must be 512, 2048 or 4096."
  }
}

variable "log_retention_in_days" {
  description = "Days Log Analytics keeps data (30-730)."
  type        = number
  default     = 30
}

variable "key_vault_soft_delete_retention_days" {
  description = "Days a deleted Key Vault secret or certificate stays recoverable (7-90)."
  type        = number
  default     = 90
}

variable "operator_principal_id" {
  description = "Object id of the operator (user or group) who stores tenant credentials in Key Vault. Empty: assign Key Vault Secrets Officer yourself."
  type        = string
  default     = ""
}

variable "operator_principal_type" {
  description = "Type of operator_principal_id: User, Group or ServicePrincipal."
  type        = string
  default     = "User"

  validation {
    condition     = contains(["User", "Group", "ServicePrincipal"], var.operator_principal_type)
    error_message = "operator_principal_type must be User, Group or ServicePrincipal."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default = {
    application = "galbridge"
  }
}
