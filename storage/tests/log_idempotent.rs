//! An idempotent producer's retry (same producer id and sequence) is recognised and not written
//! twice, also across a roll and a reopen; a skipped sequence is refused.

#[path = "support/helpers.rs"]
mod support;

use braid_storage::log::ProducerSeq;
use braid_storage::Error;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_append_is_not_written_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    let ps = |sequence| ProducerSeq {
        producer_id: 77,
        sequence,
    };
    let first = p
        .append_idempotent(vec![rec(0), rec(1)], ps(0))
        .await
        .expect("append");
    assert!(!first.duplicate);
    let retry = p
        .append_idempotent(vec![rec(0), rec(1)], ps(0))
        .await
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, first.last_offset)
    );
    assert_eq!(p.end_offset(), 2);
    // Concurrent retries of the same sequence: exactly one write.
    let (a, b) = tokio::join!(
        p.append_idempotent(vec![rec(2)], ps(1)),
        p.append_idempotent(vec![rec(2)], ps(1))
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a.base_offset, b.base_offset);
    assert!(a.duplicate ^ b.duplicate);
    assert_eq!(p.end_offset(), 3);
    // A gap is refused.
    assert!(matches!(
        p.append_idempotent(vec![rec(9)], ps(5)).await,
        Err(Error::OutOfOrderSequence {
            expected: 2,
            got: 5,
            ..
        })
    ));
    // Fill past several rolls, other producers interleaved.
    for s in 2..60 {
        p.append_idempotent(vec![rec(s)], ps(s))
            .await
            .expect("append");
        p.append(vec![rec(s)]).await.expect("plain append");
    }
    assert!(p.segment_bases().len() > 2);
    let end = p.end_offset();
    topic.close().await.expect("close");
    drop(topic);

    let topic = open(&fs, dir.path(), small_config()).await;
    let p = topic.partition(0).expect("partition");
    // The last sequences are still remembered after a reopen.
    let retry = p
        .append_idempotent(vec![rec(59)], ps(59))
        .await
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(p.end_offset(), end);
    // Too old to remember.
    assert!(matches!(
        p.append_idempotent(vec![rec(3)], ps(3)).await,
        Err(Error::DuplicateSequenceTooOld { .. })
    ));
    let next = p
        .append_idempotent(vec![rec(60)], ps(60))
        .await
        .expect("next");
    assert_eq!(next.base_offset, end);
    topic.close().await.expect("close");
}
