//! The offline driver behind `weir test`, like Kafka Streams'
//! `TopologyTestDriver`: no broker, in-memory stores, the same tasks and
//! processors as `weir run`.
//!
//! Input lines are processed in file order (arrival order). Each input
//! partition gets its own task, records written to a repartition topic are
//! partitioned by key (murmur2, as Kafka's producer does) and processed
//! right after the record that produced them. Stores are flushed after every
//! record, as if the commit interval and cache were zero.
//!
//! The clock against which `max_future` is checked is the largest input
//! record timestamp so far (the current record's included), not the host's:
//! an input timestamp is when the record was written to Kafka, so the
//! processing clock was at least that, and the output depends only on the
//! input (a test of a record dated tomorrow gives the same result tomorrow).

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::kafka::partition_for;
use crate::processor::{Origin, Output, OutputKind, ProcessError, Task};
use crate::state::global::GlobalTables;
use crate::topology::{NodeKind, Topology};

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{file}:{line}: {reason}")]
    Input { file: String, line: usize, reason: String },
    #[error("reading {file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// One input line.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    pub topic: String,
    #[serde(default)]
    pub partition: i32,
    pub timestamp: i64,
    #[serde(default)]
    pub key: Option<String>,
    /// Raw payload text.
    #[serde(default)]
    pub value: Option<String>,
    /// A JSON value, serialised as the payload (convenience).
    #[serde(default)]
    pub value_json: Option<serde_json::Value>,
    /// Raw payload bytes in standard base64 (for payloads that are not
    /// valid UTF-8).
    #[serde(default)]
    pub value_base64: Option<String>,
}

impl InputRecord {
    fn payload(&self) -> Result<Option<Vec<u8>>, String> {
        match (&self.value, &self.value_json, &self.value_base64) {
            (Some(v), None, None) => Ok(Some(v.clone().into_bytes())),
            (None, Some(j), None) => Ok(Some(j.to_string().into_bytes())),
            (None, None, Some(b)) => crate::support::base64::decode(b).map(Some),
            (None, None, None) => Ok(None),
            _ => Err("give only one of value, value_json, value_base64".into()),
        }
    }
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub topic: String,
    pub partition: i32,
    pub timestamp: i64,
    pub key: Option<String>,
    pub value: serde_json::Value,
    /// Dead-letter records only: the reason and origin headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Runs a topology over input records.
pub(crate) struct Driver<'t> {
    topo: &'t Topology,
    tasks: BTreeMap<(usize, i32), Task>,
    partitions: i32,
    output: Vec<OutputRecord>,
    /// "Now" for the tasks: the largest input timestamp piped so far (see
    /// the module doc).
    clock_ms: i64,
    /// The global tables' rows, as their topics' input records set them.
    globals: std::sync::Arc<GlobalTables>,
}

impl<'t> Driver<'t> {
    /// `partitions`: partition count of every topic (sources, internal and
    /// output topics without an explicit count).
    pub(crate) fn new(topo: &'t Topology, partitions: i32) -> Self {
        Self {
            topo,
            tasks: BTreeMap::new(),
            partitions: partitions.max(1),
            output: Vec::new(),
            clock_ms: i64::MIN,
            globals: std::sync::Arc::new(GlobalTables::new(topo.global_tables.len())),
        }
    }

    fn partitions_of(&self, topic: &str) -> i32 {
        self.topo
            .nodes
            .iter()
            .find_map(|n| match &n.kind {
                NodeKind::ToTopic(s) if s.topic == topic => s.partitions,
                _ => None,
            })
            .unwrap_or(self.partitions)
    }

    /// Process one record and everything it causes downstream.
    pub(crate) fn pipe(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ProcessError> {
        self.clock_ms = self.clock_ms.max(timestamp);
        // A global table's record updates its row, read by every task from
        // the next record on (the order of the input).
        if let Some(g) = self.topo.global_tables.iter().position(|g| g.topic == topic) {
            if let Err(reason) = self.globals.apply(g, key.unwrap_or_default(), value) {
                tracing::warn!(topic, reason, "global table record ignored");
            }
            return Ok(());
        }
        let mut queue: VecDeque<(String, i32, Output)> = VecDeque::new();
        self.run_one(topic, partition, timestamp, key, value, &mut queue)?;
        self.drain(queue)
    }

    /// Feed queued outputs (repartition records) to the tasks reading their
    /// topics, and what those produce in turn, until nothing is left.
    fn drain(&mut self, mut queue: VecDeque<(String, i32, Output)>) -> Result<(), ProcessError> {
        while let Some((topic, partition, out)) = queue.pop_front() {
            self.run_one(
                &topic,
                partition,
                out.timestamp,
                out.key.as_deref(),
                out.value.as_deref(),
                &mut queue,
            )?;
        }
        Ok(())
    }

    fn task(&mut self, sub: usize, partition: i32) -> &mut Task {
        let topo = self.topo;
        let globals = &self.globals;
        self.tasks.entry((sub, partition)).or_insert_with(|| {
            let mut task = Task::in_memory(topo, sub, partition);
            task.set_global_tables(globals.clone());
            task
        })
    }

    fn run_one(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        queue: &mut VecDeque<(String, i32, Output)>,
    ) -> Result<(), ProcessError> {
        let (sub, _) = self
            .topo
            .source_for(topic)
            .ok_or_else(|| ProcessError::UnknownTopic(topic.to_string()))?;
        let origin = Origin {
            topic,
            partition,
            offset: -1,
            timestamp,
            key,
            value,
        };
        let mut outs = Vec::new();
        let (topo, now_ms) = (self.topo, self.clock_ms);
        let task = self.task(sub, partition);
        task.process(topo, &origin, now_ms, &mut outs)?;
        // A commit after every record, as in Kafka Streams'
        // TopologyTestDriver: what tables hold back goes out now.
        task.emit_cached(topo, &mut outs)?;
        task.flush()?;
        self.route(outs, queue);
        Ok(())
    }

    fn route(&mut self, outs: Vec<Output>, queue: &mut VecDeque<(String, i32, Output)>) {
        for out in outs {
            let p = partition_for(out.key.as_deref(), self.partitions_of(&out.topic), 0);
            if out.kind == OutputKind::Repartition {
                queue.push_back((out.topic.clone(), p, out));
            } else {
                self.output.push(to_line(out, p));
            }
        }
    }

    /// Advance every task's stream time past every window (upstream
    /// sub-topologies first, so their final results reach downstream ones).
    pub(crate) fn flush(&mut self) -> Result<(), ProcessError> {
        for sub in 0..self.topo.subtopologies.len() {
            let keys: Vec<(usize, i32)> = self.tasks.keys().copied().filter(|(s, _)| *s == sub).collect();
            for k in keys {
                let mut outs = Vec::new();
                let topo = self.topo;
                if let Some(task) = self.tasks.get_mut(&k) {
                    task.advance_stream_time(topo, i64::MAX, &mut outs)?;
                    task.emit_cached(topo, &mut outs)?;
                    task.flush()?;
                }
                let mut queue = VecDeque::new();
                self.route(outs, &mut queue);
                self.drain(queue)?;
            }
        }
        Ok(())
    }

    pub(crate) fn take_output(&mut self) -> Vec<OutputRecord> {
        std::mem::take(&mut self.output)
    }
}

fn to_line(out: Output, partition: i32) -> OutputRecord {
    let value = match &out.value {
        None => serde_json::Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())),
    };
    OutputRecord {
        topic: out.topic,
        partition,
        timestamp: out.timestamp,
        key: out.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
        value,
        headers: out.headers.into_iter().collect(),
    }
}

/// Read a JSONL input file.
pub fn read_input(path: &std::path::Path) -> Result<Vec<InputRecord>, TestError> {
    let file = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| TestError::Io {
        file: file.clone(),
        source: e,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| TestError::Io {
            file: file.clone(),
            source: e,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: InputRecord = serde_json::from_str(&line).map_err(|e| TestError::Input {
            file: file.clone(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// Run `topo` over `records`; the records written to output and
/// dead-letter topics, in order.
pub fn run(topo: &Topology, records: &[InputRecord], flush: bool) -> Result<Vec<OutputRecord>, TestError> {
    let partitions = records.iter().map(|r| r.partition + 1).max().unwrap_or(1);
    let mut driver = Driver::new(topo, partitions);
    for (i, r) in records.iter().enumerate() {
        let payload = r.payload().map_err(|reason| TestError::Input {
            file: "input".into(),
            line: i + 1,
            reason,
        })?;
        driver.pipe(
            &r.topic,
            r.partition,
            r.timestamp,
            r.key.as_deref().map(str::as_bytes),
            payload.as_deref(),
        )?;
    }
    if flush {
        driver.flush()?;
    }
    Ok(driver.take_output())
}
