//! Pure: a provider's status made to fit the CRD's schema. What goes into it comes from
//! the member — in pull mode an agent writes its report as it likes, and a member's API
//! server may answer with a whole error page — and the API server refuses a status that
//! breaks the schema whole: the provider's heartbeat and `Ready` would stay as last
//! written, for good. So models the schema cannot name are left out of
//! `status.inventory.models` (and said in `Ready`), the list is cut at its bound, and
//! condition messages at theirs.

use gpufed_api::provider::{GpuProviderStatus, ModelInventory};

/// Most entries of `status.inventory.models` (the CRD's `maxItems`).
pub const MAX_MODELS: usize = 32;
/// Most characters of a condition's message (the CRD's `maxLength`).
pub const MAX_MESSAGE_CHARS: usize = 32_768;
/// Nodes named in the sentence about unlisted ones; the rest are counted.
const NAMED: usize = 3;
/// Most characters of a member-supplied name quoted in that sentence.
const QUOTED_CHARS: usize = 64;

/// Whether the schema takes `model` (`GPU_MODEL_PATTERN`: `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`).
pub fn model_ok(model: &str) -> bool {
    let mut chars = model.chars();
    model.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether the schema takes a compute capability (`COMPUTE_CAPABILITY_PATTERN`:
/// `^[0-9]{1,2}\.[0-9]$`).
pub fn compute_ok((major, minor): (u8, u8)) -> bool {
    major <= 99 && minor <= 9
}

/// `s` quoted, cut to [`QUOTED_CHARS`] characters.
fn quoted(s: &str) -> String {
    match s.char_indices().nth(QUOTED_CHARS) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    }
}

/// What an inventory leaves out of its `models` list (its counts keep every GPU).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unlisted {
    /// The first few GPU nodes whose model or compute capability the schema refuses, each
    /// as a short phrase.
    pub invalid: Vec<String>,
    /// How many such nodes there are.
    pub invalid_nodes: usize,
    /// Models (model and memory) past [`MAX_MODELS`], and their GPUs.
    pub overflow: (usize, u32),
}

impl Unlisted {
    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.invalid_nodes == 0 && self.overflow.0 == 0
    }

    /// Records a node whose model or compute capability the schema refuses.
    pub fn invalid_node(&mut self, node: &str, model: &str, compute: (u8, u8)) {
        self.invalid_nodes += 1;
        if self.invalid.len() < NAMED {
            self.invalid.push(format!(
                "node {}: model {}, compute capability {}.{}",
                quoted(node),
                quoted(model),
                compute.0,
                compute.1
            ));
        }
    }

    /// One sentence for `Ready`'s message (empty when nothing was left out).
    pub fn sentence(&self) -> String {
        let mut parts = Vec::new();
        if self.invalid_nodes > 0 {
            let more = self.invalid_nodes - self.invalid.len();
            let more = if more > 0 {
                format!("; {more} more")
            } else {
                String::new()
            };
            parts.push(format!(
                "{} GPU node(s) report a model name or compute capability that is not valid ({}{more})",
                self.invalid_nodes,
                self.invalid.join("; ")
            ));
        }
        if self.overflow.0 > 0 {
            parts.push(format!(
                "{} more model(s) with {} GPU(s) past the first {MAX_MODELS}",
                self.overflow.0, self.overflow.1
            ));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!("not listed in status.inventory.models: {}", parts.join("; "))
    }
}

/// Cuts `models` to [`MAX_MODELS`], keeping those with the most GPUs (ties by model and
/// memory), sorted by model; returns how many went and their GPUs.
pub fn cap_models(models: &mut Vec<ModelInventory>) -> (usize, u32) {
    let mut cut = (0, 0u32);
    if models.len() > MAX_MODELS {
        models.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.model.cmp(&b.model))
                .then_with(|| a.memory_mib.cmp(&b.memory_mib))
        });
        for m in models.drain(MAX_MODELS..) {
            cut.0 += 1;
            cut.1 = cut.1.saturating_add(m.count);
        }
    }
    models.sort_by(|a, b| {
        a.model
            .cmp(&b.model)
            .then_with(|| a.memory_mib.cmp(&b.memory_mib))
    });
    cut
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters (the last one `…` when cut).
pub fn message(message: &mut String) {
    if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS - 1)
        && message[at..].chars().nth(1).is_some()
    {
        message.truncate(at);
        message.push('…');
    }
}

/// Every condition message of `st` cut to the schema's bound.
pub fn messages(st: &mut GpuProviderStatus) {
    for c in &mut st.conditions {
        message(&mut c.message);
    }
}

#[cfg(test)]
#[path = "fit_tests.rs"]
mod tests;
