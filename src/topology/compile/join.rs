//! Compiling `global_tables` (compacted topics every instance reads in
//! full) and `join` steps, which look records up in them.

use serde_saphyr::Spanned;

use super::super::*;
use super::Compiler;

impl Compiler {
    /// One [`GlobalTableDef`] per entry; their topics join `source_topics`
    /// (no step may write to them).
    pub(super) fn global_tables(
        &mut self,
        spec: &spec::TopologySpec,
        source_topics: &mut Vec<(String, Spanned<String>)>,
    ) {
        for (name, g) in &spec.global_tables {
            if spec.sources.contains_key(name) {
                self.errors.push(
                    Diagnostic::at(&g.topic, format!("global table `{name}` has the name of a source"))
                        .with_hint("source and global table names must be unique"),
                );
            }
            if let Some((_, span)) = source_topics.iter().find(|(t, _)| *t == g.topic.value) {
                self.errors.push(
                    Diagnostic::at(
                        &g.topic,
                        format!(
                            "topic `{}` is read as a source too (line {})",
                            g.topic.value,
                            span.referenced.line()
                        ),
                    )
                    .with_hint("a topic is either a stream (`sources:`) or a global table"),
                );
            }
            self.global_tables.push(GlobalTableDef {
                name: name.clone(),
                topic: g.topic.value.clone(),
            });
            source_topics.push((g.topic.value.clone(), g.topic.clone()));
        }
    }

    pub(super) fn join(&mut self, j: &spec::JoinSpec, name: &str, input: NodeId) -> Option<NodeId> {
        let Some(global) = self.global_tables.iter().position(|g| g.name == j.global.value) else {
            let known = self.global_tables.iter().map(|g| g.name.as_str());
            let hint = match crate::support::did_you_mean(&j.global.value, known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "declare it under `global_tables:` (name → topic)".into(),
            };
            self.errors
                .push(Diagnostic::at(&j.global, format!("unknown global table `{}`", j.global.value)).with_hint(hint));
            return None;
        };
        let key = self.expr(&j.key)?;
        if j.fields.is_empty() {
            self.errors.push(
                Diagnostic::at(&j.global, format!("join `{name}` adds no fields"))
                    .with_hint("add `fields: {OUTPUT_FIELD: table_field}`"),
            );
        }
        let fields = j
            .fields
            .iter()
            .map(|(out, from)| (std::sync::Arc::new(out.clone()), from.value.trim().to_string()))
            .collect();
        Some(self.add(
            name.to_string(),
            NodeKind::Join(JoinNode {
                global,
                key,
                left: j.how == JoinHow::Left,
                fields,
            }),
            Some(input),
        ))
    }
}
