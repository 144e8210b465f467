//! How many partitions each sub-topology's tasks and each repartition
//! topic have, given the source topics' counts, and the check that a join
//! with a table step is co-partitioned.
//!
//! A sub-topology has as many tasks as its largest source topic has
//! partitions, and a repartition topic as many partitions as its writer
//! has tasks (Kafka Streams' default), with one exception: the topic a
//! join's stream is repartitioned through has the table side's count, so
//! that partition `p` of the stream meets partition `p` of the table in
//! one task. Sub-topologies are numbered writers first, but a join's
//! sub-topology may read a repartition topic written by a later one (or by
//! itself), so the counts are worked out until nothing changes.

use std::collections::HashMap;

use super::{JoinNode, JoinSide, NodeKind, Topology};

/// Partition counts of a topology's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionPlan {
    /// Per sub-topology: its task count.
    pub subtopologies: Vec<i32>,
    /// Every source and repartition topic's count.
    pub topics: HashMap<String, i32>,
}

impl Topology {
    /// The join with a table step fed by repartition topic `topic`, if any.
    fn join_fed_by(&self, topic: &str) -> Option<&str> {
        self.nodes.iter().find_map(|n| match &n.kind {
            NodeKind::Source(s) if s.internal && s.topic == topic => n.children.iter().find_map(|&c| {
                matches!(
                    &self.nodes[c].kind,
                    NodeKind::Join(JoinNode {
                        side: JoinSide::Table { .. },
                        ..
                    })
                )
                .then(|| self.nodes[c].name.as_str())
            }),
            _ => None,
        })
    }

    fn sources_of(&self, sub: usize) -> impl Iterator<Item = &str> {
        self.subtopologies[sub].source_topics.iter().map(String::as_str)
    }

    /// The partition counts given the external source topics' (`external`
    /// must hold every one of them).
    pub(crate) fn partition_plan(&self, external: &HashMap<String, i32>) -> PartitionPlan {
        let mut topics: HashMap<String, i32> = self
            .external_source_topics()
            .into_iter()
            .filter_map(|t| external.get(&t).map(|&p| (t, p)))
            .collect();
        // The largest known count among `sources`, `None` while one is unknown.
        let largest = |topics: &HashMap<String, i32>, sources: &mut dyn Iterator<Item = &str>| {
            let mut n = None;
            for t in sources {
                n = Some(n.unwrap_or(1).max(*topics.get(t)?));
            }
            Some(n.unwrap_or(1))
        };
        loop {
            let mut changed = false;
            for node in &self.nodes {
                let NodeKind::ToTopic(w) = &node.kind else { continue };
                if !w.internal || topics.contains_key(&w.topic) {
                    continue;
                }
                let count = match (w.partitions, self.join_fed_by(&w.topic)) {
                    (Some(p), _) => Some(p),
                    // The table side's count: the join's sub-topology's other sources.
                    (None, Some(_)) => self.source_for(&w.topic).and_then(|(reader, _)| {
                        let mut others = self.sources_of(reader).filter(|t| self.join_fed_by(t).is_none());
                        largest(&topics, &mut others)
                    }),
                    (None, None) => {
                        let mut sources = self.sources_of(node.subtopology).filter(|t| *t != w.topic);
                        largest(&topics, &mut sources)
                    }
                };
                if let Some(p) = count {
                    topics.insert(w.topic.clone(), p);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let subtopologies = (0..self.subtopologies.len())
            .map(|sub| {
                self.sources_of(sub)
                    .filter_map(|t| topics.get(t).copied())
                    .max()
                    .unwrap_or(1)
            })
            .collect();
        PartitionPlan { subtopologies, topics }
    }

    /// Whether a sub-topology reads several topics (a join with a table
    /// step): partition `p` of each must be assigned to one instance.
    pub fn needs_copartitioned_assignment(&self) -> bool {
        self.subtopologies.iter().any(|sub| sub.source_topics.len() > 1)
    }

    /// Every join with a table step needs its sub-topology's source topics
    /// to have one partition count (`topics`: the counts the broker has):
    /// otherwise partition `p` of the stream would not meet the rows of
    /// partition `p` of the table. The error names the join and the counts.
    pub(crate) fn check_copartitioned(&self, topics: &HashMap<String, i32>) -> Result<(), String> {
        for node in &self.nodes {
            let NodeKind::Join(JoinNode {
                side: JoinSide::Table { node: table, .. },
                ..
            }) = &node.kind
            else {
                continue;
            };
            let counts: Vec<(&str, i32)> = self
                .sources_of(node.subtopology)
                .filter_map(|t| topics.get(t).map(|&p| (t, p)))
                .collect();
            if counts.windows(2).any(|w| w[0].1 != w[1].1) {
                let listed: Vec<String> = counts.iter().map(|(t, p)| format!("{t} ({p})")).collect();
                return Err(format!(
                    "join `{}` with table `{}` needs its stream and its table co-partitioned, but the topics \
                     they come from have different partition counts: {}. Give them the same count, or join \
                     on a key other than the stream's key so weir repartitions the stream (a repartition topic \
                     left from an earlier run keeps its count: `weir reset` deletes it)",
                    node.name,
                    self.nodes[*table].name,
                    listed.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::topology::Topology;

    fn topo(join_key: &str, table_key: &str) -> Topology {
        Topology::parse(&format!(
            r#"
application_id: app
sources:
  l: {{ topic: lots }}
  s: {{ topic: in }}
steps:
  - name: rows
    from: l
    table: {{ key: {table_key} }}
  - name: j
    from: s
    join: {{ table: rows, key: {join_key}, fields: {{ X: x }} }}
    to: {{ topic: out }}
"#
        ))
        .unwrap()
    }

    fn counts(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn a_joins_stream_is_repartitioned_into_as_many_partitions_as_the_table_has() {
        let t = topo("value.LOT", "key");
        let plan = t.partition_plan(&counts(&[("lots", 3), ("in", 5)]));
        assert_eq!(plan.topics["app-j-repartition"], 3);
        // The stream's sub-topology has 5 tasks, the join's 3.
        assert_eq!(plan.subtopologies, [5, 3]);
        assert!(t.check_copartitioned(&plan.topics).is_ok());
    }

    #[test]
    fn a_table_keyed_otherwise_gives_its_own_repartition_count_to_the_joins_stream() {
        let t = topo("value.LOT", "value.ID");
        let plan = t.partition_plan(&counts(&[("lots", 4), ("in", 2)]));
        assert_eq!(plan.topics["app-rows-repartition"], 4);
        assert_eq!(plan.topics["app-j-repartition"], 4);
    }

    #[test]
    fn a_stream_keyed_by_the_join_key_must_have_the_tables_partition_count() {
        let t = topo("key", "key");
        let plan = t.partition_plan(&counts(&[("lots", 3), ("in", 4)]));
        let err = t.check_copartitioned(&plan.topics).unwrap_err();
        assert!(err.contains("join `j` with table `rows`"), "{err}");
        assert!(
            err.contains("lots (3), in (4)") || err.contains("in (4), lots (3)"),
            "{err}"
        );
        assert!(t.check_copartitioned(&counts(&[("lots", 3), ("in", 3)])).is_ok());
    }
}
