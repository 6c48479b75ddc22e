use super::*;
use tokio::sync::mpsc;

/// A log whose sealed segments arrive on a channel.
fn open(dir: &Path, options: WalOptions) -> Result<(Wal, mpsc::UnboundedReceiver<Segment>), WalError> {
    let (tx, rx) = mpsc::unbounded_channel();
    Wal::open(dir, options, move |s| {
        let _ = tx.send(s);
    })
    .map(|w| (w, rx))
}

fn options(max_bytes: u64) -> WalOptions {
    WalOptions {
        max_bytes,
        segment_bytes: 1 << 20,
        fsync: Fsync::Always,
        seal_after: None,
        max_segments: DEFAULT_MAX_SEGMENTS,
    }
}

async fn drain(rx: &mut mpsc::UnboundedReceiver<Segment>) -> Vec<Segment> {
    let mut out = Vec::new();
    while let Ok(s) = rx.try_recv() {
        out.push(s);
    }
    out
}

fn records(segments: &[Segment]) -> Vec<Vec<u8>> {
    segments.iter().flat_map(|s| segment::read(&s.path).unwrap().records).collect()
}

#[tokio::test]
async fn concurrent_appends_are_all_kept_in_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, mut sealed) = open(dir.path(), options(1 << 30)).unwrap();
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(i.to_le_bytes().to_vec()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(drain(&mut sealed).await.is_empty(), "nothing sealed until asked");
    wal.seal().await;
    let segments = drain(&mut sealed).await;
    assert_eq!(segments.len(), 1);
    let mut got: Vec<u32> = records(&segments).iter().map(|r| u32::from_le_bytes(r[..].try_into().unwrap())).collect();
    got.sort();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    assert_eq!(wal.pending_bytes(), 8 + 200 * 12);
    assert_eq!(segments[0].bytes, wal.pending_bytes());
    wal.remove(&segments[0]).unwrap();
    assert_eq!((wal.pending_bytes(), wal.segments()), (0, 0));
    // Sealing an empty log hands over nothing.
    wal.seal().await;
    assert!(drain(&mut sealed).await.is_empty());
}

#[tokio::test]
async fn a_full_log_refuses_until_the_consumer_removes_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    // Header (8) + two records of 8 + 42 bytes fit in 108; a third does not.
    let (wal, mut sealed) = open(dir.path(), options(108)).unwrap();
    wal.append(vec![1; 42]).await.unwrap();
    wal.append(vec![2; 42]).await.unwrap();
    assert_eq!(wal.append(vec![3; 42]).await, Err(AppendError::Full { pending: 108, max: 108 }));
    wal.seal().await;
    let segments = drain(&mut sealed).await;
    wal.remove(&segments[0]).unwrap();
    wal.append(vec![3; 42]).await.unwrap();
    wal.seal().await;
    assert_eq!(records(&drain(&mut sealed).await), vec![vec![3; 42]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_refuses_at_once_without_queueing_past_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    // A consumer that takes its time: the writer waits in `on_sealed` until `release` is sent,
    // so appends queue behind it.
    let (entered, in_consumer) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (sealed_tx, mut sealed) = mpsc::unbounded_channel();
    let released = std::sync::Mutex::new(released);
    let wal = Wal::open(dir.path(), options(108), move |s| {
        let _ = entered.send(());
        let _ = released.lock().unwrap().recv();
        let _ = sealed_tx.send(s);
    })
    .unwrap();
    wal.append(vec![1; 42]).await.unwrap();
    let sealing = tokio::spawn({
        let wal = wal.clone();
        async move { wal.seal().await }
    });
    tokio::task::spawn_blocking(move || in_consumer.recv().unwrap()).await.unwrap();
    // The writer is busy: 58 bytes on disk, and 42 more (with the next segment's header, 50) fit in 108.
    let queued = tokio::spawn({
        let wal = wal.clone();
        async move { wal.append(vec![2; 34]).await }
    });
    while wal.queued_bytes() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(wal.queued_bytes(), 42);
    // Full, written and queued: refused at once, not queued behind the busy writer (the timeout
    // only turns the old behaviour, waiting for the writer, into a failure instead of a hang).
    let refused = tokio::time::timeout(Duration::from_secs(30), wal.append(vec![3; 42])).await;
    assert_eq!(refused, Ok(Err(AppendError::Full { pending: 100, max: 108 })));
    assert_eq!((wal.queued_bytes(), wal.refused_full()), (42, 1));
    release.send(()).unwrap();
    release.send(()).unwrap();
    sealing.await.unwrap();
    queued.await.unwrap().unwrap();
    assert_eq!((wal.queued_bytes(), wal.pending_bytes()), (0, 108));
    wal.seal().await;
    assert_eq!(records(&drain(&mut sealed).await), vec![vec![1; 42], vec![2; 34]]);
}

#[tokio::test]
async fn the_number_of_segments_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, mut sealed) = open(dir.path(), WalOptions { max_segments: 2, ..options(1 << 20) }).unwrap();
    for i in 0..2u8 {
        wal.append(vec![i]).await.unwrap();
        wal.seal().await;
    }
    assert_eq!(wal.append(vec![2]).await, Err(AppendError::TooManySegments { segments: 2, max: 2 }));
    assert!(AppendError::TooManySegments { segments: 2, max: 2 }.is_full());
    assert_eq!(wal.refused_full(), 1);
    let segments = drain(&mut sealed).await;
    wal.remove(&segments[0]).unwrap();
    // An open segment takes appends whatever the count.
    wal.append(vec![3]).await.unwrap();
    wal.append(vec![4]).await.unwrap();
    wal.seal().await;
    assert_eq!(records(&drain(&mut sealed).await), vec![vec![3], vec![4]]);
}

#[tokio::test]
async fn segments_rotate_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, mut sealed) = open(dir.path(), WalOptions { segment_bytes: 100, ..options(1 << 20) }).unwrap();
    for i in 0..10u8 {
        wal.append(vec![i; 40]).await.unwrap();
    }
    // Each segment is sealed once a group takes it to 100 bytes or more.
    let segments = drain(&mut sealed).await;
    assert_eq!(segments.len(), 5, "{segments:?}");
    assert!(segments.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(records(&segments), (0..10u8).map(|i| vec![i; 40]).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_reopened_log_hands_over_what_an_earlier_run_left_and_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, mut sealed) = open(dir.path(), options(1 << 20)).unwrap();
        wal.append(b"sealed".to_vec()).await.unwrap();
        wal.seal().await;
        drain(&mut sealed).await;
        wal.append(b"open at the crash".to_vec()).await.unwrap();
        // A second process may not share the directory.
        assert!(matches!(open(dir.path(), options(1 << 20)), Err(WalError::Locked(_))));
    }
    // The writer thread ends when the last handle is dropped; wait for its lock to go.
    let (wal, mut sealed) = loop {
        match open(dir.path(), options(1 << 20)) {
            Err(WalError::Locked(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => break other.unwrap(),
        }
    };
    // What the earlier run left is handed over on the writer thread, before any command: a
    // seal of the (empty) new log returns after it.
    wal.seal().await;
    let left = drain(&mut sealed).await;
    assert_eq!(records(&left), vec![b"sealed".to_vec(), b"open at the crash".to_vec()]);
    assert_eq!(wal.pending_bytes(), left.iter().map(|s| s.bytes).sum::<u64>());
    wal.append(b"new".to_vec()).await.unwrap();
    wal.seal().await;
    let new = drain(&mut sealed).await;
    assert!(new[0].id > left[1].id);
    assert_eq!(records(&new), vec![b"new".to_vec()]);
}

#[tokio::test]
async fn periodic_sync_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, mut sealed) =
        open(dir.path(), WalOptions { fsync: Fsync::Every(Duration::from_millis(20)), ..options(1 << 20) }).unwrap();
    for i in 0..5u8 {
        wal.append(vec![i]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    wal.seal().await;
    assert_eq!(records(&drain(&mut sealed).await), (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_old_open_segment_is_sealed_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, mut sealed) =
        open(dir.path(), WalOptions { seal_after: Some(Duration::from_millis(50)), ..options(1 << 20) }).unwrap();
    wal.append(b"a".to_vec()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), sealed.recv()).await.unwrap().unwrap();
    wal.append(b"b".to_vec()).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), sealed.recv()).await.unwrap().unwrap();
    assert_eq!(records(&[first, second]), vec![b"a".to_vec(), b"b".to_vec()]);
}
