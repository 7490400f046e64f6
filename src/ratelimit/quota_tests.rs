//! Tests of the quota core on paused tokio time.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::*;

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = Rate {
        count: NonZeroU32::new(per_second).unwrap(),
        per: Duration::from_secs(1),
    };
    Quota::new(rate, NonZeroU32::new(burst).unwrap())
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn burst_passes_at_once_then_one_cell_per_interval() {
    let q = quota(5, 5);
    for _ in 0..5 {
        assert!(matches!(q.admit(Instant::now(), LONG), Ok(Admission::Now)));
    }
    let start = Instant::now();
    assert_eq!(q.acquire(LONG).await, Ok(Duration::from_millis(200)));
    assert_eq!(q.acquire(LONG).await, Ok(Duration::from_millis(200)));
    assert_eq!(start.elapsed(), Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn refuses_at_once_when_the_place_is_beyond_the_budget() {
    let q = quota(5, 5);
    let now = Instant::now();
    let mut places = Vec::new();
    for _ in 0..10 {
        match q.admit(now, Duration::from_secs(1)).unwrap() {
            Admission::Now => {}
            Admission::Queued(place) => places.push(place),
        }
    }
    assert_eq!(places.len(), 5, "places at 0.2 s .. 1.0 s");
    let refused = q.admit(now, Duration::from_secs(1)).unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(1200));
    assert_eq!(Instant::now(), now, "refusal takes no time");
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let q = Arc::new(quota(10, 1));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for i in 0..8 {
        let (q, done) = (q.clone(), done_tx.clone());
        tokio::spawn(async move {
            q.acquire(LONG).await.unwrap();
            done.send((i, Instant::now())).unwrap();
        });
        // Arrivals 1 ms apart: each must be served after every earlier one.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(done_tx);
    let mut served = Vec::new();
    while let Some((i, _)) = done_rx.recv().await {
        served.push(i);
    }
    assert_eq!(served, (0..8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let q = quota(1, 1);
    let now = Instant::now();
    assert!(matches!(q.admit(now, LONG), Ok(Admission::Now)));
    let place = q.admit(now, LONG).unwrap();
    drop(place);
    // The line is empty again: the next arrival gets governor's own earliest time.
    let Admission::Queued(place) = q.admit(now, LONG).unwrap() else {
        panic!("the cell is spent");
    };
    assert_eq!(place.at - now, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_cell_until_it_ends() {
    let q = quota(100, 100);
    let start = Instant::now();
    q.pause_until(start + Duration::from_secs(2));
    assert_eq!(q.paused_until(), Some(start + Duration::from_secs(2)));
    assert_eq!(q.acquire(LONG).await, Ok(Duration::from_secs(2)));
    assert_eq!(q.paused_until(), None);
    assert_eq!(q.acquire(LONG).await, Ok(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_pause_beyond_the_budget_refuses_with_the_time_left() {
    let q = quota(100, 100);
    q.pause_until(Instant::now() + Duration::from_secs(5));
    let refused = q.acquire(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_pause_set_while_waiting_refuses_a_waiter_it_pushes_past_its_budget() {
    let q = Arc::new(quota(1, 1));
    q.acquire(LONG).await.unwrap();
    let waiter = tokio::spawn({
        let q = q.clone();
        async move { q.acquire(Duration::from_secs(2)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    q.pause_until(Instant::now() + Duration::from_secs(10));
    let refused = waiter.await.unwrap().unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(9500));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_pause_never_cuts_a_longer_one() {
    let q = quota(1, 1);
    let now = Instant::now();
    q.pause_until(now + Duration::from_secs(3));
    q.pause_until(now + Duration::from_secs(1));
    assert_eq!(q.paused_until(), Some(now + Duration::from_secs(3)));
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_never_takes_the_cell_reserved_for_a_waiter() {
    let q = quota(1, 1);
    assert!(matches!(q.admit(Instant::now(), LONG), Ok(Admission::Now)));
    let Admission::Queued(first) = q.admit(Instant::now(), LONG).unwrap() else {
        panic!("the cell is spent");
    };
    // The cell frees at 1 s; a newcomer arriving then, before the waiter wakes, queues behind it.
    tokio::time::advance(Duration::from_secs(1)).await;
    let now = Instant::now();
    let Admission::Queued(second) = q.admit(now, LONG).unwrap() else {
        panic!("the newcomer took the waiter's cell");
    };
    assert_eq!(second.at - now, Duration::from_secs(1));
    assert_eq!(first.wait().await, Ok(()));
    assert_eq!(second.wait().await, Ok(()));
    assert_eq!(Instant::now() - now, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn take_free_spends_only_a_free_cell_and_never_jumps_the_line() {
    let q = quota(5, 2);
    let now = Instant::now();
    assert!(q.take_free());
    assert!(q.take_free());
    // Burst spent: refused, and nothing reserved (the next cell is still 200 ms away).
    assert!(!q.take_free());
    let place = match q.admit(now, LONG).unwrap() {
        Admission::Queued(place) => place,
        Admission::Now => panic!("the burst was spent"),
    };
    // Someone is waiting: even once a cell is free, it is theirs.
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(!q.take_free());
    place.wait().await.unwrap();
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(q.take_free());
    // Paused (iDenfy said 429): nothing is free until the pause ends.
    tokio::time::advance(Duration::from_secs(1)).await;
    q.pause_until(Instant::now() + Duration::from_secs(2));
    assert!(!q.take_free());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(q.take_free());
}
