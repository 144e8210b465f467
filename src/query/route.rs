//! Which instance owns a partition: read from the consumer group, as the
//! group coordinator has it (each member's assignment), with the member's
//! query address taken from its `client.id`, where `weir run
//! --query-addr` appends it (`<client.id>;query=<host:port>`).
//!
//! Kafka Streams carries `application.server` in its own assignor's
//! metadata; librdkafka's assignors cannot carry any, and the client id is
//! the one string every member sends the coordinator that DescribeGroups
//! returns. The view is cached for [`FRESH_FOR`]: a stale one can only
//! send a request to an instance that no longer has the partition, which
//! then answers 503 (it never forwards a forwarded request), not a wrong
//! value.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

/// What `weir run --query-addr` appends to its consumer's `client.id`.
const TAG: &str = ";query=";

/// How long a view of the group serves lookups.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// How long a DescribeGroups may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer's `client.id` carrying the query address: the configured
/// one (or `weir-run-<application>`) with `;query=<advertised>` appended.
pub(crate) fn client_id(configured: Option<&str>, app: &str, advertised: &str) -> String {
    let base = configured
        .map(str::to_string)
        .unwrap_or_else(|| format!("weir-run-{app}"));
    let base = base.split(TAG).next().unwrap_or_default().to_string();
    format!("{base}{TAG}{advertised}")
}

/// The query address in a member's `client.id`, if it has one.
fn address_of(client_id: &str) -> Option<&str> {
    let (_, addr) = client_id.rsplit_once(TAG)?;
    (!addr.is_empty()).then_some(addr)
}

/// Topic partitions by the query address of the member that has them.
pub(super) type OwnerMap = HashMap<(String, i32), String>;

pub(super) struct Owners {
    group: String,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<OwnerMap>)>>,
    client: std::sync::Mutex<Option<Arc<BaseConsumer>>>,
}

impl Owners {
    pub(super) fn new(group: &str) -> Owners {
        Owners {
            group: group.to_string(),
            cached: tokio::sync::Mutex::new(None),
            client: std::sync::Mutex::new(None),
        }
    }

    /// The group's assignment, at most [`FRESH_FOR`] old (`fresh`: read
    /// it now).
    pub(super) async fn get(&self, bootstrap: &str, fresh: bool) -> Result<Arc<OwnerMap>, String> {
        let mut cached = self.cached.lock().await;
        if let Some((at, map)) = cached.as_ref() {
            if !fresh && at.elapsed() < FRESH_FOR {
                return Ok(map.clone());
            }
        }
        let client = self.client(bootstrap)?;
        let group = self.group.clone();
        let map = tokio::task::spawn_blocking(move || describe(&client, &group))
            .await
            .map_err(|e| format!("describing the group: {e}"))??;
        let map = Arc::new(map);
        *cached = Some((Instant::now(), map.clone()));
        Ok(map)
    }

    fn client(&self, bootstrap: &str) -> Result<Arc<BaseConsumer>, String> {
        let mut client = crate::support::lock::lock(&self.client);
        if let Some(c) = client.as_ref() {
            return Ok(c.clone());
        }
        let c: BaseConsumer = crate::kafka::client_config(bootstrap)
            .set("client.id", format!("weir-query-{}", self.group))
            .create()
            .map_err(|e| format!("kafka client: {e}"))?;
        let c = Arc::new(c);
        *client = Some(c.clone());
        Ok(c)
    }
}

/// DescribeGroups: every member's assigned partitions, by its query
/// address (members without one are left out).
fn describe(client: &BaseConsumer, group: &str) -> Result<OwnerMap, String> {
    let list = client
        .fetch_group_list(Some(group), DESCRIBE_TIMEOUT)
        .map_err(|e| format!("describing group {group}: {e}"))?;
    let mut out = OwnerMap::new();
    for g in list.groups().iter().filter(|g| g.name() == group) {
        for m in g.members() {
            let (Some(addr), Some(assignment)) = (address_of(m.client_id()), m.assignment()) else {
                continue;
            };
            for (topic, partition) in parse_assignment(assignment).unwrap_or_default() {
                out.insert((topic, partition), addr.to_string());
            }
        }
    }
    Ok(out)
}

/// The partitions of a consumer protocol assignment (Kafka's
/// `ConsumerProtocolAssignment`: version, then per topic its name and
/// partitions; the user data after them is not read).
fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = r.i16()?;
        let topic = String::from_utf8(r.take(usize::try_from(len).ok()?)?.to_vec()).ok()?;
        let partitions = r.i32()?;
        for _ in 0..partitions.max(0) {
            out.push((topic.clone(), r.i32()?));
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_address_rides_in_the_client_id() {
        let id = client_id(None, "parking", "10.0.0.7:9470");
        assert_eq!(id, "weir-run-parking;query=10.0.0.7:9470");
        assert_eq!(address_of(&id), Some("10.0.0.7:9470"));
        // A configured client.id is kept in front (quotas, broker logs).
        let id = client_id(Some("team-a"), "parking", "h:1");
        assert_eq!(id, "team-a;query=h:1");
        // Not appended twice.
        assert_eq!(client_id(Some(&id), "parking", "h:2"), "team-a;query=h:2");
        assert_eq!(address_of("weir-run-parking"), None);
        assert_eq!(address_of("x;query="), None);
    }

    #[test]
    fn an_assignment_is_read_as_kafka_writes_it() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        for (topic, parts) in [("in", vec![0i32, 2]), ("parking-x-repartition", vec![1])] {
            b.extend_from_slice(&(topic.len() as i16).to_be_bytes());
            b.extend_from_slice(topic.as_bytes());
            b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        b.extend_from_slice(&(-1i32).to_be_bytes()); // no user data
        assert_eq!(
            parse_assignment(&b).unwrap(),
            vec![
                ("in".to_string(), 0),
                ("in".to_string(), 2),
                ("parking-x-repartition".to_string(), 1)
            ]
        );
        // Truncated: refused, not half read.
        assert_eq!(parse_assignment(&b[..9]), None);
    }
}
