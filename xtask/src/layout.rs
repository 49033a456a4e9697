//! What the Functions host accepts in `host.json` and `function.json`, checked before a package is
//! written and again when a package is read back.
//!
//! Two levels:
//! - [`parse_host_json`] and [`parse_function_json`] check what any custom-handler app needs
//!   (docs/microsoft-facts.md §7): the host runs the executable named by
//!   `customHandler.description.defaultExecutablePath`; every function has exactly one trigger binding,
//!   timer schedules are 6-field NCRONTAB (or an `%APP_SETTING%` reference), HTTP triggers have a valid
//!   `authLevel`, known methods and an `http` output binding.
//! - [`check_galbridge_functions`] checks galbridge's own contract: `SyncTimer` on
//!   `%GALBRIDGE_SCHEDULE%`, `SyncHttp` (POST `sync/{link?}`, function key), `Status`
//!   (GET `status`, function key) and `Notify` (POST `notify`, anonymous: Graph cannot send a function key; every
//!   notification is checked against its subscription's `clientState` instead), each answering through the output
//!   binding `res`; and `PhonesShard`, a queue trigger (binding `shard`) on `galbridge-phones-shards` through the
//!   connection `GALBRIDGE_QUEUE` (docs/microsoft-facts.md §13).

use serde_json::Value;

/// A `host.json` or `function.json` the host would reject or run wrongly.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{file}: not valid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

fn invalid(file: &str, reason: impl Into<String>) -> LayoutError {
    LayoutError::Invalid {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

/// The parts of `host.json` the package depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// `customHandler.description.defaultExecutablePath`: the file the host starts.
    pub executable: String,
    /// `customHandler.description.arguments`.
    pub arguments: Vec<String>,
}

/// Parses and checks `host.json` (`file` names it in errors).
pub fn parse_host_json(file: &str, text: &str) -> Result<HostSettings, LayoutError> {
    let root: Value = serde_json::from_str(text).map_err(|source| LayoutError::Json {
        file: file.to_owned(),
        source,
    })?;
    if root.get("version").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(
            file,
            "\"version\" must be \"2.0\" (Functions runtime 4.x)",
        ));
    }
    let handler = root.get("customHandler").ok_or_else(|| {
        invalid(
            file,
            "no \"customHandler\" section: the host would not start galbridge",
        )
    })?;
    let description = handler
        .get("description")
        .ok_or_else(|| invalid(file, "no \"customHandler.description\""))?;
    let executable = description
        .get("defaultExecutablePath")
        .and_then(Value::as_str)
        .filter(|path| !path.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                file,
                "no \"customHandler.description.defaultExecutablePath\"",
            )
        })?
        .to_owned();
    let arguments = match description.get("arguments") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    invalid(
                        file,
                        "\"customHandler.description.arguments\" must hold strings",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(
                file,
                "\"customHandler.description.arguments\" must be an array",
            ));
        }
    };
    // With forwarding on, the host passes HTTP requests through raw instead of as invocation payloads,
    // which galbridge's handler does not expect (docs/microsoft-facts.md §7 uses `false`).
    if handler
        .get("enableForwardingHttpRequest")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(invalid(
            file,
            "\"customHandler.enableForwardingHttpRequest\" must be false: galbridge reads invocation payloads",
        ));
    }
    if let Some(bundle) = root.get("extensionBundle") {
        let id = bundle.get("id").and_then(Value::as_str);
        if id != Some("Microsoft.Azure.Functions.ExtensionBundle") {
            return Err(invalid(
                file,
                "\"extensionBundle.id\" must be \"Microsoft.Azure.Functions.ExtensionBundle\"",
            ));
        }
        if bundle.get("version").and_then(Value::as_str).is_none() {
            return Err(invalid(file, "\"extensionBundle.version\" is missing"));
        }
    }
    Ok(HostSettings {
        executable,
        arguments,
    })
}

/// The trigger of one function, as the host will bind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Timer {
        schedule: String,
    },
    Http {
        auth_level: String,
        /// Lower-cased; empty means every method.
        methods: Vec<String>,
        route: Option<String>,
    },
    Queue {
        /// The trigger binding's name (the key of the message in the invocation's `Data`).
        binding: String,
        queue_name: String,
        /// The app-setting prefix of the storage connection (absent = `AzureWebJobsStorage`).
        connection: Option<String>,
    },
}

/// One function folder of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The folder name, which is the function name the host POSTs to (`/{FunctionName}`).
    pub name: String,
    pub trigger: Trigger,
    /// Name of the `http` output binding, if any (the handler answers in `Outputs.{name}`).
    pub http_output: Option<String>,
}

const HTTP_METHODS: &[&str] = &[
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];
const AUTH_LEVELS: &[&str] = &["anonymous", "function", "admin"];

/// Parses and checks one `function.json` of the function folder `name`.
pub fn parse_function_json(
    name: &str,
    file: &str,
    text: &str,
) -> Result<FunctionSpec, LayoutError> {
    check_function_name(name).map_err(|reason| invalid(file, reason))?;
    let root: Value = serde_json::from_str(text).map_err(|source| LayoutError::Json {
        file: file.to_owned(),
        source,
    })?;
    let bindings = root
        .get("bindings")
        .and_then(Value::as_array)
        .filter(|bindings| !bindings.is_empty())
        .ok_or_else(|| invalid(file, "\"bindings\" must be a non-empty array"))?;

    let mut trigger = None;
    let mut http_output = None;
    for (index, binding) in bindings.iter().enumerate() {
        let field = |key: &str| binding.get(key).and_then(Value::as_str);
        let kind = field("type")
            .ok_or_else(|| invalid(file, format!("binding {index} has no \"type\"")))?;
        let direction = field("direction")
            .ok_or_else(|| invalid(file, format!("binding {index} has no \"direction\"")))?;
        let binding_name = field("name").filter(|n| is_identifier(n)).ok_or_else(|| {
            invalid(
                file,
                format!("binding {index} needs a \"name\" that is an identifier"),
            )
        })?;
        match (kind, direction) {
            (k, _) if k.ends_with("Trigger") => {
                if direction != "in" {
                    return Err(invalid(
                        file,
                        format!("trigger \"{binding_name}\" must have direction \"in\""),
                    ));
                }
                if trigger.is_some() {
                    return Err(invalid(
                        file,
                        "a function has exactly one trigger binding; found two",
                    ));
                }
                trigger = Some(parse_trigger(file, k, binding_name, binding)?);
            }
            ("http", "out") => http_output = Some(binding_name.to_owned()),
            (_, "in" | "out" | "inout") => {}
            (_, other) => {
                return Err(invalid(
                    file,
                    format!("binding \"{binding_name}\" has unknown direction \"{other}\""),
                ));
            }
        }
    }
    let trigger = trigger.ok_or_else(|| {
        invalid(
            file,
            "no trigger binding (type \"…Trigger\", direction \"in\")",
        )
    })?;
    if matches!(trigger, Trigger::Http { .. }) && http_output.is_none() {
        return Err(invalid(
            file,
            "an HTTP trigger needs an \"http\" output binding (direction \"out\"): the handler answers through it",
        ));
    }
    Ok(FunctionSpec {
        name: name.to_owned(),
        trigger,
        http_output,
    })
}

fn parse_trigger(
    file: &str,
    kind: &str,
    binding_name: &str,
    binding: &Value,
) -> Result<Trigger, LayoutError> {
    match kind {
        "queueTrigger" => {
            let queue_name = binding
                .get("queueName")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(file, "queueTrigger needs a \"queueName\""))?;
            // Queue names: 3-63 lowercase letters, digits and single hyphens (or an %APP_SETTING% reference).
            let is_setting =
                queue_name.len() > 2 && queue_name.starts_with('%') && queue_name.ends_with('%');
            let valid = (3..=63).contains(&queue_name.len())
                && queue_name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !queue_name.starts_with('-')
                && !queue_name.ends_with('-')
                && !queue_name.contains("--");
            if !valid && !is_setting {
                return Err(invalid(
                    file,
                    format!("queueName \"{queue_name}\" is not a valid queue name"),
                ));
            }
            Ok(Trigger::Queue {
                binding: binding_name.to_owned(),
                queue_name: queue_name.to_owned(),
                connection: binding
                    .get("connection")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        }
        "timerTrigger" => {
            let schedule = binding
                .get("schedule")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(file, "timerTrigger needs a \"schedule\""))?;
            check_schedule(schedule).map_err(|reason| invalid(file, reason))?;
            Ok(Trigger::Timer {
                schedule: schedule.to_owned(),
            })
        }
        "httpTrigger" => {
            // The host treats a missing authLevel as "function"; we insist on saying it.
            let auth_level = binding
                .get("authLevel")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .filter(|level| AUTH_LEVELS.contains(&level.as_str()))
                .ok_or_else(|| {
                    invalid(
                        file,
                        "httpTrigger needs \"authLevel\": anonymous, function or admin",
                    )
                })?;
            let methods = match binding.get("methods") {
                None => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_ascii_lowercase)
                            .filter(|m| HTTP_METHODS.contains(&m.as_str()))
                            .ok_or_else(|| invalid(file, format!("unknown HTTP method {item}")))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(invalid(
                        file,
                        "\"methods\" must be an array of HTTP methods",
                    ));
                }
            };
            let route = match binding.get("route") {
                None => None,
                Some(Value::String(route)) => {
                    // Routes are relative to the `api/` prefix; a leading slash or a repeated prefix
                    // gives URLs nobody calls.
                    if route.starts_with('/') || route.starts_with("api/") {
                        return Err(invalid(
                            file,
                            format!("route \"{route}\" must not start with \"/\" or \"api/\""),
                        ));
                    }
                    Some(route.clone())
                }
                Some(_) => return Err(invalid(file, "\"route\" must be a string")),
            };
            Ok(Trigger::Http {
                auth_level,
                methods,
                route,
            })
        }
        other => Err(invalid(
            file,
            format!(
                "trigger type \"{other}\" is not one galbridge's package knows (timerTrigger, httpTrigger, queueTrigger)"
            ),
        )),
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_function_name(name: &str) -> Result<(), String> {
    // Function names: letters first, then letters, digits, '_' or '-', at most 127 characters.
    let mut chars = name.chars();
    let valid = name.len() <= 127
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!("\"{name}\" is not a valid function (folder) name"))
    }
}

/// Checks a timer schedule: an `%APP_SETTING%` reference, or a 6-field NCRONTAB expression
/// (`second minute hour day month day-of-week`, UTC). Flex Consumption does not take the
/// `hh:mm:ss` TimeSpan form, so neither do we.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    if let Some(setting) = schedule.strip_prefix('%').and_then(|s| s.strip_suffix('%')) {
        return if !setting.is_empty()
            && setting
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            Ok(())
        } else {
            Err(format!(
                "schedule \"{schedule}\" is not a valid %APP_SETTING% reference"
            ))
        };
    }
    check_ncrontab(schedule)
}

/// Checks a 6-field NCRONTAB expression, field by field, with each number inside its range.
pub fn check_ncrontab(expression: &str) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 6] = [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 6),
    ];
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!(
            "schedule \"{expression}\" has {} fields; NCRONTAB needs 6 (second minute hour day month day-of-week)",
            fields.len()
        ));
    }
    for (field, (label, low, high)) in fields.iter().zip(FIELDS) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(n) if n >= 1 => {}
                    _ => {
                        return Err(format!(
                            "schedule \"{expression}\": bad step \"{step}\" in the {label} field"
                        ));
                    }
                }
            }
            if range == "*" {
                continue;
            }
            for bound in range.split('-') {
                // Month and weekday names (JAN, MON …) are allowed by NCRONTAB.
                let named = (label == "month" || label == "day-of-week")
                    && bound.len() == 3
                    && bound.chars().all(|c| c.is_ascii_alphabetic());
                if named {
                    continue;
                }
                match bound.parse::<u32>() {
                    Ok(n) if (low..=high).contains(&n) => {}
                    _ => {
                        return Err(format!(
                            "schedule \"{expression}\": \"{bound}\" is not in {low}..={high} for the {label} field"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// galbridge's own host contract: the host starts `galbridge serve`.
pub fn check_galbridge_host(host: &HostSettings) -> Result<(), String> {
    if host.executable != crate::EXECUTABLE_NAME {
        return Err(format!(
            "host.json starts \"{}\"; galbridge's package ships the executable as \"{}\"",
            host.executable,
            crate::EXECUTABLE_NAME
        ));
    }
    if host.arguments.first().map(String::as_str) != Some("serve") {
        return Err(format!(
            "host.json must start the executable with [\"serve\"], not {:?}",
            host.arguments
        ));
    }
    Ok(())
}

/// galbridge's own function contract (README.md, "Run it"; docs/architecture.md, "Contracts"): which functions exist and how each
/// is bound. The binary answers `/SyncTimer`, `/SyncHttp`, `/Status`, `/Notify` and `/PhonesShard` and writes its
/// HTTP answers to the output binding `res`.
pub fn check_galbridge_functions(functions: &[FunctionSpec]) -> Result<(), String> {
    let find = |name: &str| {
        functions
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| format!("function {name} is missing"))
    };
    let timer = find("SyncTimer")?;
    match &timer.trigger {
        Trigger::Timer { schedule } if schedule == "%GALBRIDGE_SCHEDULE%" => {}
        other => {
            return Err(format!(
                "SyncTimer must be a timer on %GALBRIDGE_SCHEDULE%, found {other:?}"
            ));
        }
    }
    let http_expectations = [
        ("SyncHttp", "function", "post", "sync/{link?}"),
        ("Status", "function", "get", "status"),
        // Graph's change notifications come without a function key (docs/microsoft-facts.md §11).
        ("Notify", "anonymous", "post", "notify"),
    ];
    for (name, auth, method, route) in http_expectations {
        let function = find(name)?;
        match &function.trigger {
            Trigger::Http {
                auth_level,
                methods,
                route: Some(actual_route),
            } if auth_level == auth && methods == &[method.to_owned()] && actual_route == route => {
            }
            other => {
                return Err(format!(
                    "{name} must be an HTTP trigger (authLevel {auth}, methods [{method}], route {route}), found {other:?}"
                ));
            }
        }
        if function.http_output.as_deref() != Some("res") {
            return Err(format!(
                "{name} must answer through the http output binding \"res\""
            ));
        }
    }
    // The shard queue: the binding name is where the handler reads the message, the queue is the one galbridge
    // sends shards to by default, and the connection is the GALBRIDGE_QUEUE__* settings the infrastructure writes.
    let shard = find("PhonesShard")?;
    match &shard.trigger {
        Trigger::Queue {
            binding,
            queue_name,
            connection: Some(connection),
        } if binding == "shard"
            && queue_name == "galbridge-phones-shards"
            && connection == "GALBRIDGE_QUEUE" => {}
        other => {
            return Err(format!(
                "PhonesShard must be a queueTrigger named \"shard\" on queue galbridge-phones-shards with connection GALBRIDGE_QUEUE, found {other:?}"
            ));
        }
    }
    Ok(())
}
