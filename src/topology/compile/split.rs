//! Splitting the compiled graph into sub-topologies, numbered and ordered
//! the way Kafka Streams' `describe()` does it.

use super::super::*;
use super::Compiler;

impl Compiler {
    /// Number connected components (the repartition topics are the only
    /// cuts; a join with a table step is connected to the table, whose
    /// store it reads: Kafka Streams merges sub-topologies sharing a store
    /// the same way) so that a repartition topic's writer comes before its
    /// reader, otherwise in node creation order, and order each one's
    /// nodes like Kafka Streams: by descending subtree size, then name.
    pub(super) fn split(&mut self) -> Vec<SubTopology> {
        let n = self.nodes.len();
        // The joins' links to their tables, both ways.
        let mut linked: Vec<Vec<NodeId>> = vec![Vec::new(); n];
        for (id, node) in self.nodes.iter().enumerate() {
            if let NodeKind::Join(JoinNode {
                side: JoinSide::Table { node: table, .. },
                ..
            }) = &node.kind
            {
                linked[id].push(*table);
                linked[*table].push(id);
            }
        }
        let mut comp: Vec<Option<usize>> = vec![None; n];
        let mut count = 0;
        for start in 0..n {
            if comp[start].is_some() {
                continue;
            }
            let mut stack = vec![start];
            while let Some(x) = stack.pop() {
                if comp[x].is_some() {
                    continue;
                }
                comp[x] = Some(count);
                stack.extend(self.nodes[x].children.iter().copied());
                stack.extend(self.nodes[x].parents.iter().copied());
                stack.extend(linked[x].iter().copied());
            }
            count += 1;
        }
        let order = self.writers_first(&comp, count);
        for (i, c) in comp.iter().enumerate() {
            self.nodes[i].subtopology = order[c.unwrap_or(0)];
        }
        for s in &mut self.stores {
            s.subtopology = self.nodes[s.node].subtopology;
        }
        let sizes: Vec<usize> = (0..n).map(|i| subtree_size(&self.nodes, i)).collect();
        (0..count)
            .map(|id| {
                let mut nodes: Vec<NodeId> = (0..n).filter(|&i| self.nodes[i].subtopology == id).collect();
                nodes.sort_by(|&a, &b| {
                    sizes[b]
                        .cmp(&sizes[a])
                        .then_with(|| self.nodes[a].name.cmp(&self.nodes[b].name))
                });
                let source_topics = nodes
                    .iter()
                    .filter_map(|&i| match &self.nodes[i].kind {
                        NodeKind::Source(s) => Some(s.topic.clone()),
                        _ => None,
                    })
                    .collect();
                SubTopology {
                    id,
                    nodes,
                    source_topics,
                }
            })
            .collect()
    }

    /// The number of each component: writers of a repartition topic before
    /// its readers, otherwise in creation order (without a join with a
    /// table that is already the case: a repartition source is created
    /// after its sink, and its component holds only nodes below it). A
    /// component reading a topic it writes itself (a join whose stream and
    /// table come from one sub-topology) is no constraint.
    fn writers_first(&self, comp: &[Option<usize>], count: usize) -> Vec<usize> {
        let comp_of = |id: NodeId| comp[id].unwrap_or(0);
        let mut before: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); count];
        for (id, node) in self.nodes.iter().enumerate() {
            let NodeKind::ToTopic(t) = &node.kind else { continue };
            if !t.internal {
                continue;
            }
            for (rid, reader) in self.nodes.iter().enumerate() {
                if matches!(&reader.kind, NodeKind::Source(s) if s.internal && s.topic == t.topic)
                    && comp_of(rid) != comp_of(id)
                {
                    before[comp_of(rid)].insert(comp_of(id));
                }
            }
        }
        let mut number = vec![usize::MAX; count];
        let mut next = 0;
        while next < count {
            // The first component in creation order whose writers all have
            // their number.
            let Some(c) =
                (0..count).find(|&c| number[c] == usize::MAX && before[c].iter().all(|&w| number[w] != usize::MAX))
            else {
                // A cycle (joins whose streams and tables come from each
                // other's sub-topologies): creation order for what is left;
                // `topology/partitions.rs` does not depend on the order.
                for n in number.iter_mut().filter(|n| **n == usize::MAX) {
                    *n = next;
                    next += 1;
                }
                break;
            };
            number[c] = next;
            next += 1;
        }
        number
    }
}
