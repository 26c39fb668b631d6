//! Put, get, delete and scan across the memtable and several SSTables: the newest version wins
//! wherever it lives, a tombstone in a newer source hides a value in an older one, and range
//! bounds are honoured.

#[path = "lsm_support/common.rs"]
mod common;

use std::ops::Bound;

use common::*;

#[tokio::test]
async fn reads_merge_memtable_and_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let lsm = open(&fs, dir.path(), small()).await;
    let mut seq = 0;
    let mut pos = 0;
    let mut apply = |b| {
        seq += 1;
        pos += 10;
        (b, seq, pos)
    };

    // Table 1: keys 0..300 = "a<i>".
    for i in 0..300 {
        let (b, s, p) = apply(put(key(i), format!("a{i}")));
        lsm.apply(b, s, p).await.expect("apply");
    }
    lsm.flush().await.expect("flush");
    // Table 2: overwrite the even keys, delete every 3rd.
    for i in 0..300 {
        let b = if i % 3 == 0 {
            del(key(i))
        } else if i % 2 == 0 {
            put(key(i), format!("b{i}"))
        } else {
            continue;
        };
        let (b, s, p) = apply(b);
        lsm.apply(b, s, p).await.expect("apply");
    }
    lsm.flush().await.expect("flush");
    // Memtable: re-insert some deleted keys, add new ones past the end.
    for i in (0..300).step_by(9).chain(300..320) {
        let (b, s, p) = apply(put(key(i), format!("c{i}")));
        lsm.apply(b, s, p).await.expect("apply");
    }
    assert_eq!(lsm.levels()[0].tables, 2, "two flushed tables in level 0");

    let now = lsm.visible_seq();
    let expect = |i: u64| -> Option<String> {
        if i.is_multiple_of(9) || i >= 300 {
            Some(format!("c{i}"))
        } else if i.is_multiple_of(3) {
            None
        } else if i.is_multiple_of(2) {
            Some(format!("b{i}"))
        } else {
            Some(format!("a{i}"))
        }
    };
    for i in 0..330 {
        let want = if i < 320 { expect(i) } else { None };
        assert_eq!(get_str(&lsm, &key(i), now).await, want, "key {i}");
    }

    let all = scan_all(&lsm, now).await;
    let want: Vec<(Vec<u8>, Vec<u8>)> = (0..320)
        .filter_map(|i| expect(i).map(|v| (key(i), v.into_bytes())))
        .collect();
    assert_eq!(all, want);

    // Bounds.
    let part = lsm
        .scan((Bound::Excluded(key(10)), Bound::Included(key(20))), now)
        .expect("scan")
        .collect()
        .await
        .expect("collect");
    let want: Vec<Vec<u8>> = (11..=20)
        .filter(|&i| expect(i).is_some())
        .map(key)
        .collect();
    assert_eq!(
        part.iter().map(|(k, _)| k.to_vec()).collect::<Vec<_>>(),
        want
    );
    let part = lsm
        .scan(key(295)..key(305), now)
        .expect("scan")
        .collect()
        .await
        .expect("collect");
    let want: Vec<Vec<u8>> = (295..305)
        .filter(|&i| expect(i).is_some())
        .map(key)
        .collect();
    assert_eq!(
        part.iter().map(|(k, _)| k.to_vec()).collect::<Vec<_>>(),
        want
    );

    // A batch is applied atomically at one seqno, and an empty key space range scans empty.
    let mut b = braid_storage::lsm::WriteBatch::new();
    b.put(&b"zz1"[..], &b"1"[..])
        .put(&b"zz2"[..], &b"2"[..])
        .delete(key(1));
    lsm.apply(b, now + 1, 99_999).await.expect("apply batch");
    assert_eq!(
        get_str(&lsm, b"zz1", now).await,
        None,
        "not visible at the older seqno"
    );
    assert_eq!(get_str(&lsm, b"zz2", now + 1).await.as_deref(), Some("2"));
    assert_eq!(get_str(&lsm, &key(1), now + 1).await, None);
    assert_eq!(get_str(&lsm, &key(1), now).await.as_deref(), Some("a1"));
    let none = lsm
        .scan(b"zzz".to_vec().., now + 1)
        .expect("scan")
        .collect()
        .await
        .expect("collect");
    assert!(none.is_empty());

    // A scan is Send and can be driven from another task (as a query executor would).
    let lsm = std::sync::Arc::new(lsm);
    let remote = {
        let lsm = lsm.clone();
        tokio::spawn(async move {
            lsm.scan(.., now)
                .expect("scan")
                .collect()
                .await
                .expect("collect")
                .len()
        })
    };
    assert_eq!(remote.await.expect("join"), all.len());
    let lsm = std::sync::Arc::try_unwrap(lsm).expect("sole owner");

    // Sequence numbers must increase.
    let err = lsm
        .apply(put(key(1), "x"), now, 1)
        .await
        .expect_err("old seqno");
    assert!(
        matches!(err, braid_storage::Error::InvalidArgument(_)),
        "{err}"
    );
    lsm.close().await.expect("close");
}

/// Tables larger than the readahead window: scans that start anywhere and run across many
/// blocks and readahead refills return every key once, in order.
#[tokio::test]
async fn long_scans_cross_readahead_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = fs();
    let mut opts = small();
    opts.memtable_bytes_max = 8 << 20;
    opts.table_bytes_max = 8 << 20;
    opts.block_cache_bytes = 64 << 10; // most blocks come from readahead, not the cache
    let lsm = open(&fs, dir.path(), opts).await;
    let n = 6000u64;
    let value = |i: u64| format!("{i}-{}", "v".repeat((i % 150) as usize));
    for chunk in 0..n / 100 {
        let mut b = braid_storage::lsm::WriteBatch::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            b.put(key(i), value(i));
        }
        lsm.apply(b, chunk + 1, chunk + 1).await.expect("apply");
    }
    lsm.flush().await.expect("flush");
    lsm.compact_full().await.expect("compact");
    assert!(
        lsm.levels().iter().map(|l| l.bytes).sum::<u64>() > 512 << 10,
        "{:?}",
        lsm.levels()
    );
    let all = scan_all(&lsm, u64::MAX).await;
    assert_eq!(all.len() as u64, n);
    for (i, (k, v)) in all.iter().enumerate() {
        assert_eq!(k, &key(i as u64));
        assert_eq!(v, value(i as u64).as_bytes());
    }
    for start in [1u64, 777, 2999, 5990] {
        let got = lsm
            .scan(key(start)..key(start + 2500), u64::MAX)
            .expect("scan")
            .collect()
            .await
            .expect("collect");
        let want: Vec<Vec<u8>> = (start..(start + 2500).min(n)).map(key).collect();
        assert_eq!(
            got.iter().map(|(k, _)| k.to_vec()).collect::<Vec<_>>(),
            want
        );
    }
    lsm.close().await.expect("close");
}
