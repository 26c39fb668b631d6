//! Follow mode wakes on a new durable append without polling, crosses segment rolls, and sees
//! history then live records with no gap and no duplicate.

#[path = "support/helpers.rs"]
mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_wakes_on_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    for i in 0..50 {
        p.append(vec![rec(i)]).await.expect("append");
    }
    let mut f = p.follow(10);
    let mut seen = Vec::new();
    while seen.len() < 40 {
        let recs = tokio::time::timeout(SHORT, f.next())
            .await
            .expect("history")
            .expect("next");
        seen.extend(recs.into_iter().map(|r| r.offset));
    }
    // Caught up: the next call waits ...
    let waiting = tokio::time::timeout(Duration::from_millis(200), f.next()).await;
    assert!(waiting.is_err(), "follower returned without new data");
    // ... and wakes as soon as a record is durable, from another task.
    let p2 = p.clone();
    let writer = tokio::spawn(async move {
        for i in 50..150 {
            p2.append(vec![rec(i)]).await.expect("append");
        }
    });
    while seen.len() < 140 {
        let recs = tokio::time::timeout(SHORT, f.next())
            .await
            .expect("live")
            .expect("next");
        seen.extend(recs.into_iter().map(|r| r.offset));
    }
    writer.await.expect("writer");
    assert_eq!(seen, (10..150).collect::<Vec<u64>>());
    assert!(p.segment_bases().len() > 2, "the follower crossed rolls");
    topic.close().await.expect("close");
    // A closed partition ends the follower instead of hanging.
    let end = tokio::time::timeout(SHORT, f.next())
        .await
        .expect("follower must not hang");
    assert!(matches!(end, Err(braid_storage::Error::Closed)), "{end:?}");
}
