//! A partition of an aligned sub-topology is read from its own librdkafka
//! queue. librdkafka forwards a newly assigned partition's fetches to the
//! consumer's main queue until the queue is split off; split after the
//! assign (as weir did), the first fetch could land in the main queue and
//! be processed after newer records of the partition's own queue. weir now
//! detaches the queue in the rebalance callback before the assign
//! (`weir::detach_queue`); this checks, against the real broker,
//! that no record of such a partition then reaches the main queue, even
//! when the queue is split long after the assignment.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Message};

struct Detaching {
    topic: String,
}

impl ClientContext for Detaching {}

impl ConsumerContext for Detaching {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            for e in tpl.elements() {
                if e.topic() == self.topic {
                    assert!(weir::detach_queue(consumer, e.topic(), e.partition()));
                }
            }
        }
    }
}

#[test]
fn a_partition_detached_before_its_assignment_never_feeds_the_main_queue() {
    const PARTITIONS: i32 = 3;
    const PER_PARTITION: i64 = 300;
    let topic = unique("it-first-fetch");
    create_topic(&topic, PARTITIONS);
    let p = producer();
    for partition in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            produce(
                &p,
                &topic,
                partition,
                1_000 + i,
                Some(b"k"),
                Some(format!("{i}").as_bytes()),
            );
        }
    }
    flush(&p);

    let consumer: BaseConsumer<Detaching> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("it-first-fetch"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create_with_context(Detaching { topic: topic.clone() })
        .unwrap();
    let consumer = Arc::new(consumer);
    consumer.subscribe(&[&topic]).unwrap();

    // Serve the main queue for a while after the assignment, as weir's loop
    // does between two looks at the partition queues. Without the detach
    // librdkafka's fetches of all three partitions arrive here.
    let mut from_main = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut assigned_at = None;
    while Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            from_main += 1;
        }
        let n = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if n == PARTITIONS as usize {
            let at = *assigned_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
    }
    assert!(assigned_at.is_some(), "never assigned the topic's partitions");
    assert_eq!(from_main, 0, "records of a detached partition reached the main queue");

    // Everything is in the partitions' own queues, in offset order.
    for partition in 0..PARTITIONS {
        let queue = consumer.split_partition_queue(&topic, partition).unwrap();
        let mut next = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next < PER_PARTITION && Instant::now() < deadline {
            consumer.poll(Duration::ZERO);
            if let Some(Ok(m)) = queue.poll(Duration::from_millis(100)) {
                assert_eq!(m.offset(), next, "partition {partition} out of order");
                next += 1;
            }
        }
        assert_eq!(
            next, PER_PARTITION,
            "partition {partition}: records missing from its queue"
        );
    }
    drop(consumer);
    delete_topics(&[&topic]);
}
