//! The AuditPolicy types, as kube-apiserver holds them after loading.

use std::fmt;

use kubetrail_model::{Level, Stage};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of [`Stage`]s as a bitset: copying, union and membership cost nothing, so evaluation stays
/// allocation-free. Serializes as a list of stage names in request order.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StageSet(u8);

impl StageSet {
    /// No stage.
    pub const EMPTY: StageSet = StageSet(0);
    /// Every stage.
    pub const ALL: StageSet = StageSet(0b1111);

    fn bit(stage: Stage) -> u8 {
        1 << (stage as u8)
    }

    pub fn contains(self, stage: Stage) -> bool {
        self.0 & Self::bit(stage) != 0
    }

    pub fn insert(&mut self, stage: Stage) {
        self.0 |= Self::bit(stage);
    }

    #[must_use]
    pub fn union(self, other: StageSet) -> StageSet {
        StageSet(self.0 | other.0)
    }

    /// The stages not in `self` (upstream `InvertStages`).
    #[must_use]
    pub fn invert(self) -> StageSet {
        StageSet(!self.0 & Self::ALL.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The stages in request order (`RequestReceived` first).
    pub fn iter(self) -> impl Iterator<Item = Stage> {
        Stage::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Stage> for StageSet {
    fn from_iter<I: IntoIterator<Item = Stage>>(iter: I) -> Self {
        let mut set = StageSet::EMPTY;
        for s in iter {
            set.insert(s);
        }
        set
    }
}

impl fmt::Debug for StageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for StageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(s.as_str())?;
        }
        f.write_str("]")
    }
}

impl Serialize for StageSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for s in self.iter() {
            seq.serialize_element(s.as_str())?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for StageSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stages = Vec::<Stage>::deserialize(deserializer)?;
        Ok(stages.into_iter().collect())
    }
}

fn no_stages(s: &StageSet) -> bool {
    s.is_empty()
}

/// One entry of a rule's `resources`: an API group and resources in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    /// `""` is the core group, `"*"` every group (Kubernetes 1.36+).
    pub group: String,
    /// Empty matches every resource in the group. `pods/log` names a subresource, `*/log` a subresource of any
    /// resource, `pods/*` a resource with or without any subresource.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Empty matches every name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// One rule of a policy. Every non-empty list narrows what the rule matches; empty lists match everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub level: Level,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<GroupResources>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
    /// As written in the rule; evaluation unions the policy's `omitStages` in.
    #[serde(skip_serializing_if = "no_stages")]
    pub omit_stages: StageSet,
    /// `None` inherits the policy's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omit_managed_fields: Option<bool>,
    /// 1-based line of the rule in the file it was loaded from (0 when built in code).
    #[serde(skip)]
    pub line: usize,
}

impl Rule {
    /// A rule that matches every request at `level`.
    pub fn new(level: Level) -> Rule {
        Rule {
            level,
            users: Vec::new(),
            user_groups: Vec::new(),
            verbs: Vec::new(),
            resources: Vec::new(),
            namespaces: Vec::new(),
            non_resource_urls: Vec::new(),
            omit_stages: StageSet::EMPTY,
            omit_managed_fields: None,
            line: 0,
        }
    }
}

/// An `audit.k8s.io/v1` Policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub rules: Vec<Rule>,
    #[serde(skip_serializing_if = "no_stages")]
    pub omit_stages: StageSet,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub omit_managed_fields: bool,
}

/// What the policy decides for one request (upstream `RequestAuditConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub level: Level,
    /// The matching rule's stages unioned with the policy's.
    pub omit_stages: StageSet,
    pub omit_managed_fields: bool,
    /// 0-based index of the matching rule; `None` when no rule matched (level `None`).
    pub rule: Option<usize>,
}

impl Decision {
    /// Whether an event of this request at `stage` is written.
    pub fn keeps(&self, stage: Stage) -> bool {
        self.level != Level::None && !self.omit_stages.contains(stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_set_serializes_in_request_order() {
        let set: StageSet = [Stage::Panic, Stage::RequestReceived].into_iter().collect();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["RequestReceived","Panic"]"#
        );
        assert_eq!(set.invert().len(), 2);
        assert!(!set.invert().contains(Stage::Panic));
    }
}
