//! Quotas that outlive a config reload: a team's or an account's quota, with the cells it has
//! spent and the requests waiting in its line, is kept while its name, rate and burst stay the
//! same. A quota whose rate or burst changed starts afresh; one no longer configured is dropped.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use super::Quota;
use crate::config::Rate;

/// The quotas of the running config, by `team:NAME` or `account:NAME`. Clones share them.
#[derive(Clone, Default)]
pub struct Quotas(Arc<Mutex<HashMap<String, Kept>>>);

struct Kept {
    rate: Rate,
    burst: NonZeroU32,
    quota: Arc<Quota>,
}

impl Quotas {
    /// The quota named `key`: the one kept if its rate and burst are these, else a new one.
    pub fn get(&self, key: &str, rate: Rate, burst: NonZeroU32) -> Arc<Quota> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match kept.get(key) {
            Some(k) if k.rate == rate && k.burst == burst => k.quota.clone(),
            _ => {
                let quota = Arc::new(Quota::new(rate, burst));
                let entry = Kept {
                    rate,
                    burst,
                    quota: quota.clone(),
                };
                kept.insert(key.to_string(), entry);
                quota
            }
        }
    }

    /// Forgets every quota but those named in `keys` (the ones of the new config).
    pub fn keep_only(&self, keys: &HashSet<String>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|key, _| keys.contains(key));
    }
}

/// The key of a team's quota.
pub fn team_key(name: &str) -> String {
    format!("team:{name}")
}

/// The key of an account's quota.
pub fn account_key(name: &str) -> String {
    format!("account:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_quota_while_its_rate_and_burst_stay() {
        let quotas = Quotas::default();
        let rate = crate::config::values::rate("10/s").unwrap();
        let burst = NonZeroU32::new(5).unwrap();
        let first = quotas.get("team:a", rate, burst);
        assert!(Arc::ptr_eq(&first, &quotas.get("team:a", rate, burst)));
        let faster = crate::config::values::rate("20/s").unwrap();
        let changed = quotas.get("team:a", faster, burst);
        assert!(!Arc::ptr_eq(&first, &changed));
        quotas.keep_only(&HashSet::new());
        assert!(!Arc::ptr_eq(&changed, &quotas.get("team:a", faster, burst)));
    }
}
