//! The `settings` interface: the pipeline's `[pipeline.settings]`, read-only.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::sandbox::bindings::ferry::processor::settings as wit;

/// The import name.
pub const IMPORT: &str = "ferry:processor/settings@0.2.0";

/// The `settings` interface's part of a guest's store.
pub struct SettingsState {
    pub(crate) values: Arc<BTreeMap<String, String>>,
}

impl wit::Host for SettingsState {
    fn get(&mut self, key: String) -> Option<String> {
        self.values.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
