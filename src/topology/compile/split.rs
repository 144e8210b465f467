//! Splitting the compiled graph into sub-topologies, numbered and ordered
//! the way Kafka Streams' `describe()` does it.

use super::super::*;
use super::Compiler;

impl Compiler {
    /// Number connected components in node creation order (the repartition
    /// topics are the only cuts) and order each one's nodes like Kafka
    /// Streams: by descending subtree size, then name.
    pub(super) fn split(&mut self) -> Vec<SubTopology> {
        let n = self.nodes.len();
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
            }
            count += 1;
        }
        for (i, c) in comp.iter().enumerate() {
            self.nodes[i].subtopology = c.unwrap_or(0);
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
}
