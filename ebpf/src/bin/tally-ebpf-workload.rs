//! Workloads for the probes' tests and bench, run as child processes so that each runs in the
//! cgroup (and network namespace) the test chose:
//!
//! ```text
//! tally-ebpf-workload [--cgroup DIR] [--netns NAME] COMMAND ...
//!   burn MILLIS                      spin one thread until it has had MILLIS of CPU time
//!   serve ADDR PORT_FILE CONNS       accept CONNS connections one by one, read each to EOF;
//!                                    prints the bytes received
//!   send ADDR CONNS BYTES            open CONNS connections, send BYTES on each, close
//!   pingpong ROUNDS                  two threads pass a byte back and forth over pipes
//!   http REQUESTS CONNECTIONS        an HTTP/1.1 server and keep-alive clients over loopback;
//!                                    every 100th request on a new connection
//!   load-probes                      try Probes::load; prints "ok" or "missing: ..." and the error
//! ```
//! `--cgroup` moves this process into that cgroup2 directory first; `--netns` enters the network
//! namespace made by `ip netns add NAME`.

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::ExitCode,
    time::Duration,
};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        let value = args.remove(0);
        match flag.as_str() {
            "--cgroup" => {
                let procs = format!("{value}/cgroup.procs");
                fs::write(&procs, std::process::id().to_string()).unwrap_or_else(|e| panic!("joining {procs}: {e}"));
            }
            "--netns" => {
                let path = format!("/run/netns/{value}");
                let ns = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: a valid namespace fd; this process is still single-threaded.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!("setns {path}: {}", std::io::Error::last_os_error());
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or_else(|| panic!("missing argument {i}")) };
    let num = |i: usize| -> u64 { arg(i).parse().unwrap_or_else(|e| panic!("argument {i}: {e}")) };
    match arg(0) {
        "burn" => burn(Duration::from_millis(num(1))),
        "serve" => serve(arg(1), arg(2), num(3)),
        "send" => send(arg(1), num(2), num(3)),
        "pingpong" => pingpong(num(1)),
        "http" => http(num(1), num(2)),
        "load-probes" => return load_probes(),
        other => panic!("unknown command {other}"),
    }
    ExitCode::SUCCESS
}

/// Spins until this thread has run for `cpu` of CPU time (not wall time: on a busy machine the
/// burner must still burn what the tests expect).
fn burn(cpu: Duration) {
    let thread_cpu = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let start = thread_cpu();
    let mut x: u64 = 1;
    while thread_cpu() - start < cpu {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
        std::hint::black_box(x);
    }
}

fn serve(addr: &str, port_file: &str, conns: u64) {
    let listener = TcpListener::bind(addr).expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    // Written then renamed, so the test never reads a half-written file.
    fs::write(format!("{port_file}.tmp"), port.to_string()).expect("port file");
    fs::rename(format!("{port_file}.tmp"), port_file).expect("port file");
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..conns {
        let (mut stream, _) = listener.accept().expect("accept");
        loop {
            match stream.read(&mut buf).expect("read") {
                0 => break,
                n => total += n as u64,
            }
        }
    }
    println!("{total}");
}

fn send(addr: &str, conns: u64, bytes: u64) {
    let chunk = vec![0x5au8; 1 << 16];
    for _ in 0..conns {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n]).expect("write");
            left -= n as u64;
        }
        stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
        // Wait for the server's close so the whole exchange is done when we exit.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("read");
    }
}

fn pingpong(rounds: u64) {
    let (mut a_read, mut a_write) = pipe();
    let (mut b_read, mut b_write) = pipe();
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        for _ in 0..rounds {
            a_read.read_exact(&mut byte).expect("read");
            b_write.write_all(&byte).expect("write");
        }
    });
    let mut byte = [1u8; 1];
    for _ in 0..rounds {
        a_write.write_all(&byte).expect("write");
        b_read.read_exact(&mut byte).expect("read");
    }
    echo.join().expect("echo thread");
}

/// `requests` GETs spread over `connections` client threads against a server
/// thread per connection, all over loopback: packets through `cgroup_skb`,
/// wakeups through `sched_switch`, new connections through `inet_sock_set_state`.
fn http(requests: u64, connections: u64) {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 512\r\n\r\n";
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.expect("accept");
            std::thread::spawn(move || {
                let body = [b'x'; 512];
                let mut buf = [0u8; 1024];
                let mut pending = Vec::new();
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let mut response = RESPONSE.to_vec();
                        response.extend_from_slice(&body);
                        if conn.write_all(&response).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let per_client = requests / connections.max(1);
    let clients: Vec<_> = (0..connections.max(1))
        .map(|_| {
            std::thread::spawn(move || {
                let mut response = vec![0u8; RESPONSE.len() + 512];
                let mut conn = TcpStream::connect(addr).expect("connect");
                for i in 0..per_client {
                    if i > 0 && i % 100 == 0 {
                        conn = TcpStream::connect(addr).expect("connect");
                    }
                    conn.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n").expect("request");
                    conn.read_exact(&mut response).expect("response");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
}

fn pipe() -> (fs::File, fs::File) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: fresh fds owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        (fs::File::from_raw_fd(fds[0]), fs::File::from_raw_fd(fds[1]))
    }
}

fn load_probes() -> ExitCode {
    match tally_ebpf::Probes::load(&tally_ebpf::ProbeConfig::default()) {
        Ok(probes) => {
            probes.detach();
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("missing: {}", error.missing().unwrap_or_else(|| "-".into()));
            println!("error: {error}");
            ExitCode::from(2)
        }
    }
}
