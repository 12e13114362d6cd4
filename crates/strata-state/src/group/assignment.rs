//! A set of topic partitions, the unit every assignment of the group
//! protocol is written in.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A set of partitions, by topic name. Never holds a topic with no
/// partitions, so two equal sets compare equal however they were built.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "BTreeMap<String, BTreeSet<u32>>", into = "BTreeMap<String, BTreeSet<u32>>")]
pub struct Assignment(BTreeMap<String, BTreeSet<u32>>);

impl From<BTreeMap<String, BTreeSet<u32>>> for Assignment {
    fn from(mut topics: BTreeMap<String, BTreeSet<u32>>) -> Assignment {
        topics.retain(|_, partitions| !partitions.is_empty());
        Assignment(topics)
    }
}

impl From<Assignment> for BTreeMap<String, BTreeSet<u32>> {
    fn from(assignment: Assignment) -> Self {
        assignment.0
    }
}

impl<S: Into<String>> FromIterator<(S, u32)> for Assignment {
    fn from_iter<I: IntoIterator<Item = (S, u32)>>(iter: I) -> Assignment {
        let mut out = Assignment::default();
        for (topic, partition) in iter {
            out.insert(topic.into(), partition);
        }
        out
    }
}

impl Assignment {
    pub fn new() -> Assignment {
        Assignment::default()
    }

    /// The empty set, for statics.
    pub const fn empty() -> Assignment {
        Assignment(BTreeMap::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }

    pub fn contains(&self, topic: &str, partition: u32) -> bool {
        self.0.get(topic).is_some_and(|p| p.contains(&partition))
    }

    /// Adds a partition; true when it was not there.
    pub fn insert(&mut self, topic: String, partition: u32) -> bool {
        self.0.entry(topic).or_default().insert(partition)
    }

    /// Removes a partition; true when it was there.
    pub fn remove(&mut self, topic: &str, partition: u32) -> bool {
        let Some(partitions) = self.0.get_mut(topic) else { return false };
        let removed = partitions.remove(&partition);
        if partitions.is_empty() {
            self.0.remove(topic);
        }
        removed
    }

    /// Every partition, in (topic, partition) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.0.iter().flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic.as_str(), *p)))
    }

    /// The topics with at least one partition here, and their partitions.
    pub fn topics(&self) -> &BTreeMap<String, BTreeSet<u32>> {
        &self.0
    }

    pub fn partitions_of(&self, topic: &str) -> Option<&BTreeSet<u32>> {
        self.0.get(topic)
    }

    pub fn is_subset(&self, other: &Assignment) -> bool {
        self.0.iter().all(|(topic, partitions)| other.0.get(topic).is_some_and(|o| partitions.is_subset(o)))
    }

    pub fn is_disjoint(&self, other: &Assignment) -> bool {
        self.0.iter().all(|(topic, partitions)| other.0.get(topic).is_none_or(|o| partitions.is_disjoint(o)))
    }

    /// The partitions in `self` and in `other`.
    pub fn intersection(&self, other: &Assignment) -> Assignment {
        self.filter(|topic, partition| other.contains(topic, partition))
    }

    /// The partitions in `self` but not in `other`.
    pub fn difference(&self, other: &Assignment) -> Assignment {
        self.filter(|topic, partition| !other.contains(topic, partition))
    }

    /// The partitions in either.
    pub fn union(&self, other: &Assignment) -> Assignment {
        let mut out = self.clone();
        out.extend(other);
        out
    }

    /// Adds every partition of `other`.
    pub fn extend(&mut self, other: &Assignment) {
        for (topic, partitions) in &other.0 {
            self.0.entry(topic.clone()).or_default().extend(partitions);
        }
    }

    /// Removes every partition of `other`.
    pub fn subtract(&mut self, other: &Assignment) {
        for (topic, partitions) in &other.0 {
            if let Some(mine) = self.0.get_mut(topic) {
                mine.retain(|p| !partitions.contains(p));
                if mine.is_empty() {
                    self.0.remove(topic);
                }
            }
        }
    }

    /// The partitions for which `keep` holds.
    pub fn filter(&self, mut keep: impl FnMut(&str, u32) -> bool) -> Assignment {
        let mut out = BTreeMap::new();
        for (topic, partitions) in &self.0 {
            let kept: BTreeSet<u32> = partitions.iter().copied().filter(|p| keep(topic, *p)).collect();
            if !kept.is_empty() {
                out.insert(topic.clone(), kept);
            }
        }
        Assignment(out)
    }
}

impl std::fmt::Display for Assignment {
    /// `a-0,a-1,b-3`, as operators read partitions in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (topic, partition)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{topic}-{partition}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, u32)]) -> Assignment {
        items.iter().map(|(t, p)| (*t, *p)).collect()
    }

    #[test]
    fn set_operations_never_keep_empty_topics() {
        let a = set(&[("a", 0), ("a", 1), ("b", 0)]);
        let b = set(&[("a", 1), ("b", 0), ("c", 2)]);
        assert_eq!(a.intersection(&b), set(&[("a", 1), ("b", 0)]));
        assert_eq!(a.difference(&b), set(&[("a", 0)]));
        assert_eq!(a.difference(&b).topics().len(), 1, "b emptied out and is gone");
        assert_eq!(a.union(&b).len(), 4);
        assert!(set(&[("a", 1)]).is_subset(&a));
        assert!(!b.is_subset(&a));
        assert!(set(&[("c", 2)]).is_disjoint(&a));
        let mut c = a.clone();
        c.subtract(&set(&[("b", 0)]));
        assert_eq!(c, set(&[("a", 0), ("a", 1)]));
        assert!(c.remove("a", 0) && c.remove("a", 1) && !c.remove("a", 1));
        assert_eq!(c, Assignment::new());
        assert_eq!(a.to_string(), "a-0,a-1,b-0");
    }

    #[test]
    fn decoding_drops_empty_topics() {
        let mut raw = BTreeMap::new();
        raw.insert("a".to_string(), BTreeSet::new());
        raw.insert("b".to_string(), BTreeSet::from([1]));
        assert_eq!(Assignment::from(raw), set(&[("b", 1)]));
    }
}
