//! Log de-duplication: a topic's message is logged only when it differs from the last
//! one logged for that topic (the election loop repeats itself every retry period).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Coordinator, lock};

/// The last message logged per topic.
#[derive(Default)]
pub(super) struct Notes(Mutex<BTreeMap<&'static str, String>>);

impl Coordinator {
    pub(super) fn note(&self, key: &'static str, msg: String) {
        let mut n = lock(&self.notes.0);
        if n.get(key) != Some(&msg) {
            tracing::info!(topic = key, "{msg}");
            n.insert(key, msg);
        }
    }

    pub(super) fn warn(&self, key: &'static str, msg: String) {
        let mut n = lock(&self.notes.0);
        if n.get(key) != Some(&msg) {
            tracing::warn!(topic = key, "{msg}");
            n.insert(key, msg);
        }
    }
}
