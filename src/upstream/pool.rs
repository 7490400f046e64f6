//! Idle keep-alive connections to iDenfy, shared by every clone of the upstream client: the most
//! recently used first (it is the least likely to have been closed by the server), at most
//! `pool_max_idle`, none kept past `pool_idle_timeout`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::conn::Conn;

/// The idle connections. Cloning shares them.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    /// Oldest at the front, most recently used at the back.
    idle: Mutex<VecDeque<Idle>>,
    idle_timeout: Duration,
    max_idle: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    pub fn new(idle_timeout: Duration, max_idle: usize) -> Self {
        Pool {
            shared: Arc::new(Shared {
                idle: Mutex::new(VecDeque::new()),
                idle_timeout,
                max_idle,
            }),
        }
    }

    /// The most recently used idle connection that is still usable: not idle longer than the
    /// timeout, and nothing (EOF, stray bytes) arrived on it while it was idle.
    pub fn checkout(&self, now: Instant) -> Option<Conn> {
        loop {
            let idle = self.shared.lock().pop_back()?;
            if self.shared.expired(&idle, now) {
                // The others are older still. Closed outside the lock.
                let stale = std::mem::take(&mut *self.shared.lock());
                drop(stale);
                return None;
            }
            if !idle.conn.is_readable() {
                return Some(idle.conn);
            }
        }
    }

    /// Keeps a connection whose last response was read whole, for the next request.
    pub fn checkin(&self, mut conn: Conn) {
        if self.shared.max_idle == 0 {
            return;
        }
        conn.buf.clear();
        let since = Instant::now();
        let mut pool = self.shared.lock();
        if pool.len() < self.shared.max_idle {
            // The usual case: nothing evicted, so nothing to carry out of the lock.
            pool.push_back(Idle { conn, since });
            return;
        }
        let evicted = pool.pop_front();
        pool.push_back(Idle { conn, since });
        // Closed outside the lock.
        drop(pool);
        drop(evicted);
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.shared.lock().len()
    }

    /// Closes, every `pool_idle_timeout`, the connections idle for longer, until the pool is
    /// dropped. Without it an unused pool would hold its sockets until the next request.
    pub fn spawn_reaper(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let every = self.shared.idle_timeout.max(Duration::from_secs(1));
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.evict_expired(Instant::now());
            }
        });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // A panic while holding the lock leaves a consistent queue: keep using it.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, idle: &Idle, now: Instant) -> bool {
        now.saturating_duration_since(idle.since) > self.idle_timeout
    }

    fn evict_expired(&self, now: Instant) {
        let stale: Vec<Idle> = {
            let mut pool = self.lock();
            let n = pool.iter().take_while(|i| self.expired(i, now)).count();
            pool.drain(..n).collect()
        };
        drop(stale);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    use crate::upstream::conn::{Connector, Stream};

    async fn server() -> (TcpListener, Connector) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tls = crate::upstream::tls_config(None).unwrap();
        let connector = Connector::new(&url.parse().unwrap(), tls, Duration::from_secs(1)).unwrap();
        (listener, connector)
    }

    /// A new connection, and its server side.
    async fn connect(listener: &TcpListener, connector: &Connector) -> (Conn, TcpStream) {
        let conn = connector.connect().await.unwrap();
        (conn, listener.accept().await.unwrap().0)
    }

    fn tcp(conn: &Conn) -> &TcpStream {
        match &conn.stream {
            Stream::Plain(s) => s,
            Stream::Tls(_) => unreachable!("the tests connect over plain TCP"),
        }
    }

    fn local(conn: &Conn) -> SocketAddr {
        tcp(conn).local_addr().unwrap()
    }

    #[tokio::test]
    async fn hands_back_the_most_recently_used_connection() {
        let (listener, connector) = server().await;
        let pool = Pool::new(Duration::from_secs(90), 4);
        let (first, _a) = connect(&listener, &connector).await;
        let (second, _b) = connect(&listener, &connector).await;
        let second_addr = local(&second);
        pool.checkin(first);
        pool.checkin(second);
        let out = pool.checkout(Instant::now()).unwrap();
        assert_eq!(local(&out), second_addr);
        assert_eq!(pool.idle(), 1);
    }

    #[tokio::test]
    async fn keeps_at_most_max_idle_dropping_the_oldest() {
        let (listener, connector) = server().await;
        let pool = Pool::new(Duration::from_secs(90), 2);
        let mut addrs = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (conn, server) = connect(&listener, &connector).await;
            addrs.push(local(&conn));
            servers.push(server);
            pool.checkin(conn);
        }
        assert_eq!(pool.idle(), 2);
        assert_eq!(local(&pool.checkout(Instant::now()).unwrap()), addrs[2]);
        assert_eq!(local(&pool.checkout(Instant::now()).unwrap()), addrs[1]);
        assert!(pool.checkout(Instant::now()).is_none());

        let none = Pool::new(Duration::from_secs(90), 0);
        none.checkin(connect(&listener, &connector).await.0);
        assert_eq!(none.idle(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn discards_connections_idle_past_the_timeout() {
        let (listener, connector) = server().await;
        let pool = Pool::new(Duration::from_secs(90), 4);
        let (conn, _server) = connect(&listener, &connector).await;
        pool.checkin(conn);
        tokio::time::advance(Duration::from_secs(89)).await;
        let conn = pool.checkout(Instant::now()).expect("still fresh");
        pool.checkin(conn);
        tokio::time::advance(Duration::from_secs(91)).await;
        assert!(pool.checkout(Instant::now()).is_none());
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reaper_closes_expired_connections_without_traffic() {
        let (listener, connector) = server().await;
        let pool = Pool::new(Duration::from_secs(90), 4);
        pool.spawn_reaper();
        let (conn, _server) = connect(&listener, &connector).await;
        pool.checkin(conn);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(pool.idle(), 1);
        tokio::time::sleep(Duration::from_secs(150)).await;
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn discards_a_connection_the_server_closed_while_idle() {
        let (listener, connector) = server().await;
        let pool = Pool::new(Duration::from_secs(90), 4);
        let (conn, server) = connect(&listener, &connector).await;
        assert!(!conn.is_readable());
        drop(server);
        // Wait, with a real waker, until the reactor saw the FIN: the pool must then see it too.
        std::future::poll_fn(|cx| tcp(&conn).poll_read_ready(cx))
            .await
            .unwrap();
        pool.checkin(conn);
        assert!(pool.checkout(Instant::now()).is_none());
        assert_eq!(pool.idle(), 0);
    }
}
