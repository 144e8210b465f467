//! `weir describe`: the processor graph in the text format of Kafka Streams'
//! `Topology.describe()`, or as a Mermaid flowchart.

use std::fmt::Write;

use super::{JoinNode, JoinSide, NodeKind, TableEmitSpec, Topology};

/// Kafka Streams prints internal topics without the application id prefix.
fn shown_topic<'a>(topo: &Topology, topic: &'a str, internal: bool) -> &'a str {
    if internal {
        topic
            .strip_prefix(&format!("{}-", topo.application_id))
            .unwrap_or(topic)
    } else {
        topic
    }
}

fn names(topo: &Topology, ids: &[usize]) -> String {
    if ids.is_empty() {
        return "none".to_string();
    }
    // Kafka Streams keeps successors and predecessors in a TreeSet ordered
    // like the nodes themselves: larger subtree first, then by name.
    let mut v: Vec<(usize, &str)> = ids
        .iter()
        .map(|&i| (super::subtree_size(&topo.nodes, i), topo.nodes[i].name.as_str()))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    v.into_iter().map(|(_, n)| n).collect::<Vec<_>>().join(", ")
}

/// The stores a node uses: its own, and for a join with a table step the
/// table's (Kafka Streams lists it on the join processor too).
fn stores_of_node(topo: &Topology, id: usize) -> Vec<&str> {
    let joined = match &topo.nodes[id].kind {
        NodeKind::Join(JoinNode {
            side: JoinSide::Table { store, .. },
            ..
        }) => Some(*store),
        _ => None,
    };
    topo.stores
        .iter()
        .enumerate()
        .filter(|(i, s)| s.node == id || joined == Some(*i))
        .map(|(_, s)| s.name.as_str())
        .collect()
}

/// What a join looks up: the global table's name, or the table step's.
fn join_target<'t>(topo: &'t Topology, j: &JoinNode) -> &'t str {
    match j.side {
        JoinSide::Global(g) => &topo.global_tables[g].name,
        JoinSide::Table { node, .. } => &topo.nodes[node].name,
    }
}

/// Text in `Topology.describe()` format.
pub fn text(topo: &Topology) -> String {
    let mut out = String::from("Topologies:\n ");
    for sub in &topo.subtopologies {
        let _ = writeln!(out, "  Sub-topology: {}", sub.id);
        for &id in &sub.nodes {
            let node = &topo.nodes[id];
            match &node.kind {
                NodeKind::Source(s) => {
                    let _ = writeln!(
                        out,
                        "    Source: {} (topics: [{}])",
                        node.name,
                        shown_topic(topo, &s.topic, s.internal)
                    );
                    let _ = writeln!(out, "      --> {}", names(topo, &node.children));
                }
                NodeKind::ToTopic(s) => {
                    let _ = writeln!(
                        out,
                        "    Sink: {} (topic: {})",
                        node.name,
                        shown_topic(topo, &s.topic, s.internal)
                    );
                    let _ = writeln!(out, "      <-- {}", names(topo, &node.parents));
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "    Processor: {} (stores: [{}])",
                        node.name,
                        stores_of_node(topo, id).join(", ")
                    );
                    let _ = writeln!(out, "      --> {}", names(topo, &node.children));
                    let _ = writeln!(out, "      <-- {}", names(topo, &node.parents));
                }
            }
        }
        out.push('\n');
    }
    // Kafka Streams prints each global store as a sub-topology of its own
    // that generates no tasks.
    for (i, g) in topo.global_tables.iter().enumerate() {
        let _ = writeln!(
            out,
            "  Sub-topology: {} for global store (will not generate tasks)",
            topo.subtopologies.len() + i
        );
        let _ = writeln!(out, "    Source: {}-source (topics: [{}])", g.name, g.topic);
        let _ = writeln!(out, "      --> {}-global", g.name);
        let _ = writeln!(out, "    Processor: {}-global (stores: [{}])", g.name, g.name);
        let _ = writeln!(out, "      --> none");
        let _ = writeln!(out, "      <-- {}-source\n", g.name);
    }
    out
}

fn mermaid_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn op_label(topo: &Topology, kind: &NodeKind) -> String {
    match kind {
        NodeKind::Filter(e) => format!("filter: {}", e.source()),
        NodeKind::Map(m) => {
            let set: Vec<&str> = m.set.iter().map(|(k, _)| k.as_str()).collect();
            format!("map: set {}", set.join(", "))
        }
        NodeKind::Window(w) => {
            let size = humantime::format_duration(std::time::Duration::from_millis(w.size_ms as u64));
            let kind = if w.size_ms == w.advance_ms {
                "tumbling"
            } else {
                "hopping"
            };
            format!("window: {kind} {size} by {}", w.group_names.join(", "))
        }
        NodeKind::Table(t) => {
            let emit = match t.emit {
                TableEmitSpec::OnUpdate => "table: latest per key".to_string(),
                TableEmitSpec::OnCommit => "table: latest per key, emitted at commit".to_string(),
            };
            match t.ttl_ms {
                Some(ms) => format!(
                    "{emit}, ttl {}",
                    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64))
                ),
                None => emit,
            }
        }
        NodeKind::Join(j) => format!(
            "{} join {} on {}: {}",
            if j.left { "left" } else { "inner" },
            join_target(topo, j),
            j.key.source(),
            j.fields.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>().join(", ")
        ),
        NodeKind::TableAggregate(a) => {
            let emit = match a.emit {
                TableEmitSpec::OnUpdate => "",
                TableEmitSpec::OnCommit => ", emitted at commit",
            };
            let aggs: Vec<&str> = a.aggregates.iter().map(|x| x.name.as_str()).collect();
            format!(
                "table aggregate: {} by {}{emit}",
                aggs.join(", "),
                a.group_names.join(", ")
            )
        }
        NodeKind::Pass => "pass".to_string(),
        NodeKind::Source(_) | NodeKind::ToTopic(_) => String::new(),
    }
}

/// A Mermaid flowchart: topics as stadiums, processors as boxes, stores as
/// cylinders, one subgraph per sub-topology.
pub fn mermaid(topo: &Topology) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut topics: Vec<String> = Vec::new();
    let mut edges = String::new();
    for sub in &topo.subtopologies {
        let _ = writeln!(out, "  subgraph sub{}[\"Sub-topology {}\"]", sub.id, sub.id);
        for &id in &sub.nodes {
            let node = &topo.nodes[id];
            let nid = mermaid_id(&node.name);
            match &node.kind {
                NodeKind::Source(s) => {
                    let _ = writeln!(out, "    {nid}[\"source: {}\"]", node.name);
                    let t = format!("t_{}", mermaid_id(&s.topic));
                    if !topics.contains(&s.topic) {
                        topics.push(s.topic.clone());
                    }
                    let _ = writeln!(edges, "  {t} --> {nid}");
                }
                NodeKind::ToTopic(s) => {
                    let _ = writeln!(out, "    {nid}[\"sink: {}\"]", node.name);
                    let t = format!("t_{}", mermaid_id(&s.topic));
                    if !topics.contains(&s.topic) {
                        topics.push(s.topic.clone());
                    }
                    let _ = writeln!(edges, "  {nid} --> {t}");
                }
                kind => {
                    let label = op_label(topo, kind).replace('"', "#quot;");
                    let _ = writeln!(out, "    {nid}[\"{}<br/>{label}\"]", node.name);
                    match kind {
                        NodeKind::Join(JoinNode {
                            side: JoinSide::Global(g),
                            ..
                        }) => {
                            let topic = &topo.global_tables[*g].topic;
                            if !topics.contains(topic) {
                                topics.push(topic.clone());
                            }
                            let _ = writeln!(edges, "  t_{} -. lookup .-> {nid}", mermaid_id(topic));
                        }
                        NodeKind::Join(JoinNode {
                            side: JoinSide::Table { store, .. },
                            ..
                        }) => {
                            // The table's store (drawn with the table).
                            let sid = format!("s_{}", mermaid_id(&topo.stores[*store].name));
                            let _ = writeln!(edges, "  {sid} -. lookup .-> {nid}");
                        }
                        _ => {}
                    }
                    for store in topo.stores.iter().filter(|s| s.node == id).map(|s| s.name.as_str()) {
                        let sid = format!("s_{}", mermaid_id(store));
                        let _ = writeln!(out, "    {sid}[(\"store: {store}\")]");
                        let _ = writeln!(edges, "  {nid} -.- {sid}");
                    }
                }
            }
            for &c in &node.children {
                let _ = writeln!(edges, "  {nid} --> {}", mermaid_id(&topo.nodes[c].name));
            }
        }
        out.push_str("  end\n");
    }
    for t in &topics {
        let _ = writeln!(out, "  t_{}([\"{t}\"])", mermaid_id(t));
    }
    out.push_str(&edges);
    out
}
