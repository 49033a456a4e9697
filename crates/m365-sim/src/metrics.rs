//! Request counters per (service, endpoint or cmdlet, status) and the fault table's matching.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::Serialize;

use crate::knobs::{Fault, FaultRule, Service};

/// One row of the counter table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    pub service: Service,
    /// `METHOD /route/{template}` for HTTP services, the cmdlet name for Exchange.
    pub endpoint: String,
    pub status: u16,
    pub count: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    table: Mutex<HashMap<(Service, String, u16), u64>>,
}

impl Counters {
    pub(crate) fn record(&self, service: Service, endpoint: &str, status: u16) {
        let mut table = self.table.lock();
        if let Some(count) = table.get_mut(&(service, endpoint.to_string(), status)) {
            *count += 1;
        } else {
            table.insert((service, endpoint.to_string(), status), 1);
        }
    }

    pub(crate) fn rows(&self) -> Vec<CounterRow> {
        let table = self.table.lock();
        let mut rows: Vec<CounterRow> = table
            .iter()
            .map(|((service, endpoint, status), count)| CounterRow {
                service: *service,
                endpoint: endpoint.clone(),
                status: *status,
                count: *count,
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.service, &a.endpoint, a.status).cmp(&(b.service, &b.endpoint, b.status))
        });
        rows
    }

    pub(crate) fn reset(&self) {
        self.table.lock().clear();
    }
}

#[derive(Default)]
pub(crate) struct FaultTable {
    rules: Mutex<Vec<FaultRule>>,
}

impl FaultTable {
    pub(crate) fn set(&self, rules: Vec<FaultRule>) {
        *self.rules.lock() = rules;
    }

    pub(crate) fn add(&self, rule: FaultRule) {
        self.rules.lock().push(rule);
    }

    pub(crate) fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().clone()
    }

    /// The fault to apply to this request, if any; consumes one use of a scripted rule.
    pub(crate) fn pick(&self, service: Service, method: &str, target: &str) -> Option<Fault> {
        let mut rules = self.rules.lock();
        if rules.is_empty() {
            return None;
        }
        let mut chosen = None;
        for rule in rules.iter_mut() {
            if rule.service.is_some_and(|s| s != service)
                || rule
                    .method
                    .as_deref()
                    .is_some_and(|m| !m.eq_ignore_ascii_case(method))
                || rule
                    .target_contains
                    .as_deref()
                    .is_some_and(|t| !target.contains(t))
                || rule.remaining == Some(0)
            {
                continue;
            }
            if rule.rate < 1.0 && rand::random::<f64>() >= rule.rate {
                continue;
            }
            if let Some(left) = rule.remaining.as_mut() {
                *left -= 1;
            }
            chosen = Some(rule.fault.clone());
            break;
        }
        rules.retain(|r| r.remaining != Some(0));
        chosen
    }
}
