//! The hostile loads, each bounded in count and in time, made inside a namespace the stress run
//! made: TIME_WAIT at a paced rate, a SYN flood, connections held open, CLOSE_WAIT that lingers
//! a few milliseconds.

use std::{
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// Connections each closed by its client first, so that the client's end waits in TIME_WAIT:
/// `rate` per second for `duration`, by two workers that each play both ends, toward 200
/// addresses of 127.0.0.0/8 in turn (a port in TIME_WAIT toward one address is free toward the
/// others). Returns how many were made.
pub fn time_wait(rate: u64, duration: Duration) -> io::Result<u64> {
    let started = Instant::now();
    let per_worker = rate / 2;
    let made: io::Result<Vec<u64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u32)
            .map(|w| {
                s.spawn(move || -> io::Result<u64> {
                    let listener = TcpListener::bind("0.0.0.0:0")?;
                    let port = listener.local_addr()?.port();
                    let mut made = 0u64;
                    while started.elapsed() < duration {
                        // Paced: no faster than `per_worker` a second.
                        let due = Duration::from_secs_f64(made as f64 / per_worker.max(1) as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                        let host =
                            u8::try_from(1 + (made * 2 + u64::from(w)) % 200).expect("<= 200");
                        let client = TcpStream::connect((Ipv4Addr::new(127, 0, 0, host), port))?;
                        let (mut server, _) = listener.accept()?;
                        drop(client);
                        if server.read(&mut [0u8; 1])? != 0 {
                            return Err(io::Error::other("expected EOF"));
                        }
                        made += 1;
                    }
                    Ok(made)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    Ok(made?.iter().sum())
}

/// Connections the client closes first and the server closes `linger` later (each sits in
/// CLOSE_WAIT that long), about `rate` a second until `stop`. Returns how many.
pub fn close_wait_churn(rate: u64, linger: Duration, stop: &AtomicBool) -> io::Result<u64> {
    let listener = TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0))?;
    let to = listener.local_addr()?;
    let started = Instant::now();
    let mut made = 0u64;
    // Batches of 32, so that many sockets are in CLOSE_WAIT at any moment.
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::with_capacity(32);
        for _ in 0..32 {
            let client = TcpStream::connect(to)?;
            let (mut server, _) = listener.accept()?;
            drop(client);
            if server.read(&mut [0u8; 1])? != 0 {
                return Err(io::Error::other("expected EOF"));
            }
            batch.push(server);
        }
        std::thread::sleep(linger);
        drop(batch);
        made += 32;
        let due = Duration::from_secs_f64(made as f64 / rate.max(1) as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(made)
}

/// `n` connections that wait in accept queues, never accepted, and that their clients then
/// close: two sockets each without a descriptor (the server's child in CLOSE_WAIT, the
/// client's end orphaned in FIN_WAIT2), so that hundreds of thousands need no descriptor limit
/// raised. Needs `net.core.somaxconn` at 65535. Returns the listeners, which must stay open.
pub fn closed_in_accept_queues(n: usize) -> io::Result<Vec<socket2::Socket>> {
    const PER_LISTENER: usize = 60_000;
    let mut listeners = Vec::new();
    for first in (0..n).step_by(PER_LISTENER) {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        listener.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
        listener.listen(65_535)?;
        let port = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("no port"))?
            .port();
        for i in first..(first + PER_LISTENER).min(n) {
            let host = u8::try_from(1 + i % 200).expect("<= 200");
            drop(TcpStream::connect((Ipv4Addr::new(127, 0, 0, host), port))?);
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// SYNs to `to` from non-blocking connects closed at once (the SYN-ACKs are dropped on the
/// client's side, so the server keeps retransmitting them), as fast as one thread can, for
/// `duration`. Returns how many SYNs were sent.
pub fn syn_flood(to: SocketAddr, duration: Duration) -> io::Result<u64> {
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < duration {
        for _ in 0..256 {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(to),
                socket2::Type::STREAM,
                None,
            )?;
            s.set_nonblocking(true)?;
            match s.connect(&to.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                    // Every port toward `to` is taken for now: let some go.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => return Err(e),
            }
            sent += 1;
        }
    }
    Ok(sent)
}
