//! The driver against real Modbus TCP servers on loopback (the simulator's server, which can
//! misbehave on purpose): values arrive, faults mark only the faulty device bad, a healthy
//! device beside it keeps its cadence, the rate cap holds, and no write ever reaches a device.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::{Config, parse};
use airlock_model::{Quality, Reason, Sample, TagId, Value};
use airlock_sim::server::{Banks, Fault, ServerHandle, serve};
use airlock_south_modbus::{DeviceTask, SampleBatch};
use tokio::sync::watch;

/// A device section reading `tags` from `addr`.
fn device(name: &str, addr: SocketAddr, extra: &str, tags: &str) -> String {
    format!(
        "[[device]]\nname = \"{name}\"\nasset_path = \"acme/site/area/line/cell\"\nprotocol = \"modbus_tcp\"\n\
         address = \"{addr}\"\ntimeout_ms = 200\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n{extra}\n{tags}"
    )
}

const TWO_TAGS: &str = "[[device.tag]]\nname = \"count\"\nspace = \"holding_register\"\naddress = 0\ntype = \"u32\"\n\
                        [[device.tag]]\nname = \"temp\"\nspace = \"input_register\"\naddress = 2\ntype = \"f32\"\n";

async fn server() -> ServerHandle {
    let mut banks = Banks::default();
    banks.holding_registers[0] = 0x0001;
    banks.holding_registers[1] = 0x0002;
    let t = 21.5f32.to_bits();
    banks.input_registers[2] = (t >> 16) as u16;
    banks.input_registers[3] = t as u16;
    serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(banks))).await.unwrap()
}

/// Runs every device of `config` for `run_for`, returns each batch with the instant it arrived.
async fn run(config: &Config, run_for: Duration) -> Vec<(Instant, SampleBatch)> {
    let (tx, mut rx) = airlock_pipeline::channel(10_000);
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut first = 0;
    for (i, d) in config.devices.iter().enumerate() {
        tasks.spawn(modbus_task(i, d, TagId(first), true, &tx).run(stop.clone()));
        first += d.tag_count() as u32;
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + run_for;
    let mut batches = Vec::new();
    while let Ok(Some(b)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        batches.push((Instant::now(), b));
    }
    stop_tx.send(true).unwrap();
    while tasks.join_next().await.is_some() {}
    batches
}

fn samples_of(batches: &[(Instant, SampleBatch)], device: usize) -> Vec<&Sample> {
    batches.iter().filter(|(_, b)| b.device == device).flat_map(|(_, b)| &b.samples).collect()
}

/// Only the four read function codes ever reached `server`.
fn assert_reads_only(server: &ServerHandle) {
    let functions = server.log.functions();
    assert!(!functions.is_empty(), "the server saw no request at all");
    for (f, n) in functions {
        assert!((1..=4).contains(&f), "function code {f} reached the device {n} times");
    }
}

/// Polls of device 0 (healthy, every 50 ms) came at its cadence while device 1 misbehaved.
fn assert_healthy_cadence(batches: &[(Instant, SampleBatch)]) {
    // A poll's requests come as separate batches: a poll starts with its first batch.
    let mut polls: Vec<Instant> = Vec::new();
    let mut last_poll = None;
    for (t, b) in batches.iter().filter(|(_, b)| b.device == 0 && b.samples.iter().all(|s| s.quality.is_good())) {
        if last_poll != Some(b.poll) {
            polls.push(*t);
            last_poll = Some(b.poll);
        }
    }
    assert!(polls.len() >= 20, "only {} healthy polls", polls.len());
    let mean = (*polls.last().unwrap() - polls[0]).as_secs_f64() / (polls.len() - 1) as f64;
    assert!((mean - 0.050).abs() <= 0.005, "healthy device polled every {:.1} ms, not 50 ms ± 10 %", mean * 1000.0);
}

async fn faulty_beside_healthy(fault: Fault) -> (Vec<(Instant, SampleBatch)>, ServerHandle, ServerHandle) {
    let (healthy, faulty) = (server().await, server().await);
    faulty.set_fault(fault);
    let text = device("healthy", healthy.addr, "poll_interval_ms = 50\nrate_max_per_s = 1000", TWO_TAGS)
        + &device("faulty", faulty.addr, "poll_interval_ms = 50\nrate_max_per_s = 1000", TWO_TAGS);
    let config = parse(&text, Path::new("test.toml")).unwrap();
    let batches = run(&config, Duration::from_secs(2)).await;
    (batches, healthy, faulty)
}

fn reasons(samples: &[&Sample]) -> Vec<Quality> {
    let mut q: Vec<Quality> = samples.iter().map(|s| s.quality).collect();
    q.dedup();
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_served_are_values_read() {
    let s = server().await;
    let config = parse(&device("d", s.addr, "poll_interval_ms = 20", TWO_TAGS), Path::new("t.toml")).unwrap();
    let batches = run(&config, Duration::from_millis(300)).await;
    let samples = samples_of(&batches, 0);
    assert!(samples.len() >= 4);
    let value = |tag: u32| samples.iter().find(|s| s.tag == TagId(tag)).and_then(|s| s.value.clone());
    assert_eq!(value(0), Some(Value::U64(0x0001_0002)));
    assert_eq!(value(1), Some(Value::F64(21.5)));
    assert!(samples.iter().all(|s| s.quality.is_good()));
    assert_reads_only(&s);
}

/// Tags far apart in two spaces: six read requests a poll (holding registers 0, 200, 400, 600,
/// 800 and the input registers at 2), each tag's register holding its own number.
fn six_requests() -> (String, Banks) {
    let mut banks = Banks::default();
    let mut tags = String::new();
    for (i, address) in [0usize, 200, 400, 600, 800].into_iter().enumerate() {
        banks.holding_registers[address] = 100 + i as u16;
        tags += &format!(
            "[[device.tag]]\nname = \"r{i}\"\nspace = \"holding_register\"\naddress = {address}\ntype = \"u16\"\n"
        );
    }
    let t = 21.5f32.to_bits();
    banks.input_registers[2] = (t >> 16) as u16;
    banks.input_registers[3] = t as u16;
    tags += "[[device.tag]]\nname = \"temp\"\nspace = \"input_register\"\naddress = 2\ntype = \"f32\"\n";
    (tags, banks)
}

/// With several requests in flight (`requests_in_flight_max`), the answers are read in order
/// and every tag gets its own value, poll after poll, also from a device that sends a CRC after
/// each answer (the next answer follows it in the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_read_every_tags_own_value() {
    let (tags, banks) = six_requests();
    let s = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(banks))).await.unwrap();
    for fault in [Fault::None, Fault::TrailingBytes] {
        s.set_fault(fault);
        let extra = "poll_interval_ms = 20\nrate_max_per_s = 10000\nrequests_in_flight_max = 4";
        let config = parse(&device("d", s.addr, extra, &tags), Path::new("t.toml")).unwrap();
        let batches = run(&config, Duration::from_millis(400)).await;
        let samples = samples_of(&batches, 0);
        assert!(samples.len() >= 6 * 5, "{} samples: {:?}", samples.len(), reasons(&samples));
        assert_eq!(reasons(&samples), vec![Quality::Good], "{fault:?}");
        for sample in samples {
            let expected = if sample.tag.0 < 5 { Value::U64(100 + u64::from(sample.tag.0)) } else { Value::F64(21.5) };
            assert_eq!(sample.value, Some(expected), "{fault:?}");
        }
    }
    assert_reads_only(&s);
}

/// A device that takes requests and answers none: the driver sends `requests_in_flight_max`
/// of a poll's six requests and no more before the first one's answer times out (one by
/// default), and its tags go bad with the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_requests_are_in_flight_than_the_bound() {
    let (tags, banks) = six_requests();
    // Also under a rate cap that binds (20 requests a second): the requests ahead go out at
    // their slots while the first one's answer is awaited (they waited for its answer instead,
    // and only one was ever in flight below 2,000 requests a second).
    let cases = [
        ("rate_max_per_s = 10000", 1),
        ("rate_max_per_s = 10000\nrequests_in_flight_max = 3", 3),
        ("rate_max_per_s = 10000\nrequests_in_flight_max = 16", 6),
        ("rate_max_per_s = 20\nrequests_in_flight_max = 3", 3),
    ];
    for (setting, bound) in cases {
        let s = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(banks.clone()))).await.unwrap();
        s.set_fault(Fault::Hang);
        // One connection in the run: the reconnect waits 5 s.
        let text = format!(
            "[[device]]\nname = \"d\"\nasset_path = \"acme/site\"\nprotocol = \"modbus_tcp\"\naddress = \"{}\"\n\
             timeout_ms = 400\nbackoff_initial_ms = 5000\nbackoff_max_ms = 5000\npoll_interval_ms = 20\n\
             {setting}\n{tags}",
            s.addr
        );
        let config = parse(&text, Path::new("t.toml")).unwrap();
        let batches = run(&config, Duration::from_millis(900)).await;
        assert_eq!(reasons(&samples_of(&batches, 0)), vec![Quality::Bad(Reason::Timeout)]);
        let requests: u64 = s.log.functions().iter().map(|(_, n)| n).sum();
        assert_eq!(requests, bound, "{setting:?}");
    }
}

/// A device whose TCP holds an answer back until the one before it is acknowledged (Nagle's
/// algorithm, as libmodbus's server): at the end of a poll no request goes out to carry the
/// acknowledgement, so the driver acknowledges at once, and the answers still in flight come
/// without waiting for the delayed acknowledgement (some 40 ms each on Linux: without it, a
/// poll of six requests took over 40 ms, some 20 polls a second where 200 were asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_at_a_polls_end_do_not_wait_for_a_delayed_acknowledgement() {
    let (tags, banks) = six_requests();
    let s = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(banks))).await.unwrap();
    s.set_fault(Fault::Nagle);
    let extra = "poll_interval_ms = 5\nrate_max_per_s = 100000\nrequests_in_flight_max = 4";
    let config = parse(&device("d", s.addr, extra, &tags), Path::new("t.toml")).unwrap();
    let batches = run(&config, Duration::from_millis(1000)).await;
    assert_eq!(reasons(&samples_of(&batches, 0)), vec![Quality::Good]);
    let polls: std::collections::BTreeSet<u64> = batches.iter().map(|(_, b)| b.poll).collect();
    assert!(polls.len() >= 100, "{} polls in 1 s at a 5 ms poll", polls.len());
}

/// A device that drops requests that come while it answers another: with several in flight,
/// the first poll fails (its tags bad, saying so), and the driver reads it one request at a
/// time from then on: every later poll is good. Also when the request dropped is the only one
/// left awaited when it times out (two requests a poll, or two in flight: the answers after it
/// came; the fallback waited for a timeout with others awaited, and never came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_drops_queued_requests_is_read_one_at_a_time() {
    let (six, banks) = six_requests();
    let s = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(banks))).await.unwrap();
    s.set_fault(Fault::DropsQueuedRequests);
    for (tags, in_flight) in [(six.as_str(), 4), (six.as_str(), 2), (TWO_TAGS, 2)] {
        let extra = format!("poll_interval_ms = 50\nrate_max_per_s = 10000\nrequests_in_flight_max = {in_flight}");
        let config = parse(&device("d", s.addr, &extra, tags), Path::new("t.toml")).unwrap();
        let batches = run(&config, Duration::from_millis(1500)).await;
        let samples = samples_of(&batches, 0);
        // The first request's answer may come before the timeout: its tag reads good first.
        let mut q = reasons(&samples);
        if q.first() == Some(&Quality::Good) {
            q.remove(0);
        }
        assert_eq!(q, vec![Quality::Bad(Reason::Timeout), Quality::Good], "{in_flight} in flight");
        let good = samples.iter().filter(|s| s.quality.is_good()).count();
        assert!(good >= 20, "{good} good samples, {in_flight} in flight");
    }
    assert_reads_only(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waveform_wider_than_a_request_arrives_whole() {
    // 300 samples at holding register 100..400: three requests of 125, 125 and 50 registers (the
    // last joined by the tag right after it), then one tag of 300 samples, in order, signed and
    // scaled.
    let mut banks = Banks::default();
    for i in 0..300u16 {
        banks.holding_registers[100 + usize::from(i)] = (i as i16 - 150) as u16;
    }
    banks.holding_registers[400] = 4242;
    let s = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(banks))).await.unwrap();
    let tags = "[[device.tag]]\nname = \"accel\"\nspace = \"holding_register\"\naddress = 100\ntype = \"waveform\"\n\
                waveform_samples = 300\nsample_rate_hz = 1000\nscale = 0.5\n\
                [[device.tag]]\nname = \"after\"\nspace = \"holding_register\"\naddress = 400\ntype = \"u16\"\n";
    let config = parse(&device("d", s.addr, "poll_interval_ms = 50", tags), Path::new("t.toml")).unwrap();
    let batches = run(&config, Duration::from_millis(400)).await;
    let all = samples_of(&batches, 0);
    let (samples, after): (Vec<&Sample>, Vec<&Sample>) = all.iter().partition(|s| s.tag == TagId(0));
    assert!(samples.len() >= 2, "{} waveforms", samples.len());
    assert!(after.iter().all(|s| s.value == Some(Value::U64(4242))), "{after:?}");
    assert_eq!(after.len(), samples.len());
    let expected: Vec<f32> = (0..300).map(|i| (i as f32 - 150.0) * 0.5).collect();
    for sample in &samples {
        assert!(sample.quality.is_good(), "{sample:?}");
        let Some(Value::Waveform(w)) = &sample.value else { panic!("not a waveform: {sample:?}") };
        assert_eq!(&w[..], &expected[..]);
    }
    // Exactly one sample per poll: the parts are joined, not sent one by one.
    let polls: std::collections::BTreeSet<u64> = batches.iter().map(|(_, b)| b.poll).collect();
    assert_eq!(samples.len(), polls.len());
    assert_reads_only(&s);

    // A device that answers its parts with exceptions: one bad sample per poll, saying why.
    s.set_fault(Fault::Exception);
    let batches = run(&config, Duration::from_millis(400)).await;
    let bad: Vec<&Sample> = samples_of(&batches, 0).into_iter().filter(|s| s.tag == TagId(0)).collect();
    assert!(bad.len() >= 2, "{} samples", bad.len());
    assert_eq!(reasons(&bad), vec![Quality::Bad(Reason::Exception(4))]);
    let polls: std::collections::BTreeSet<u64> = batches.iter().map(|(_, b)| b.poll).collect();
    assert_eq!(bad.len(), polls.len(), "one sample per poll, not one per part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_closes_the_connection() {
    let (batches, healthy, faulty) = faulty_beside_healthy(Fault::CloseOnConnect).await;
    assert_healthy_cadence(&batches);
    let bad = samples_of(&batches, 1);
    assert_eq!(reasons(&bad), vec![Quality::Bad(Reason::CommsLost)]);
    // Reported once per change of state, not once per failed attempt.
    assert_eq!(bad.len(), 2, "bad samples are emitted once when the device goes down");
    assert_reads_only(&healthy);
    assert!(faulty.log.functions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_accepts_and_never_answers() {
    let (batches, healthy, faulty) = faulty_beside_healthy(Fault::Hang).await;
    assert_healthy_cadence(&batches);
    assert_eq!(reasons(&samples_of(&batches, 1)), vec![Quality::Bad(Reason::Timeout)]);
    // It reconnected (with backoff) rather than waiting forever: several connections' requests.
    let attempts: u64 = faulty.log.functions().iter().map(|(_, n)| n).sum();
    assert!((2..=12).contains(&attempts), "{attempts} requests in 2 s with 200 ms timeouts and backoff");
    assert_reads_only(&healthy);
    assert_reads_only(&faulty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_answers_exceptions() {
    let (batches, healthy, faulty) = faulty_beside_healthy(Fault::Exception).await;
    assert_healthy_cadence(&batches);
    let bad = samples_of(&batches, 1);
    assert_eq!(reasons(&bad), vec![Quality::Bad(Reason::Exception(4))]);
    // The link stayed up: the device kept being polled at its cadence, no reconnects.
    let polls = batches
        .iter()
        .filter(|(_, b)| b.device == 1)
        .map(|(_, b)| b.poll)
        .collect::<std::collections::BTreeSet<u64>>()
        .len();
    assert!(polls >= 30, "only {polls} polls of the device answering exceptions");
    assert_reads_only(&healthy);
    assert_reads_only(&faulty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_sends_garbage() {
    let (batches, healthy, faulty) = faulty_beside_healthy(Fault::Garbage).await;
    assert_healthy_cadence(&batches);
    assert_eq!(reasons(&samples_of(&batches, 1)), vec![Quality::Bad(Reason::CommsLost)]);
    let requests: u64 = faulty.log.functions().iter().map(|(_, n)| n).sum();
    assert!(requests >= 2, "it reconnected after the malformed frame");
    assert_reads_only(&healthy);
    assert_reads_only(&faulty);
}

/// A device that sends two bytes more after each right answer (a serial converter's CRC):
/// the link skips them (as tokio-modbus did before it), so every poll reads good. (The guard
/// took them for the next answer's header: the tags flapped bad and the device reconnected.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_sends_bytes_after_each_answer_reads_good() {
    let s = server().await;
    s.set_fault(Fault::TrailingBytes);
    let extra = "poll_interval_ms = 20\nrate_max_per_s = 1000";
    let config = parse(&device("d", s.addr, extra, TWO_TAGS), Path::new("t.toml")).unwrap();
    let batches = run(&config, Duration::from_millis(600)).await;
    let samples = samples_of(&batches, 0);
    assert!(samples.len() >= 20, "{} samples: {:?}", samples.len(), reasons(&samples));
    assert_eq!(reasons(&samples), vec![Quality::Good]);
    assert_reads_only(&s);
}

/// The same two bytes coming 5 ms after the answer, in a segment of their own: by then the
/// next request of the poll has gone out, and they come before its answer. They are the last
/// answer's tail, not the next answer's header, so every poll still reads good. (The guard
/// took them for the start of the next answer's header: that answer failed as malformed, the
/// tags went bad and the device reconnected, poll after poll.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_trailing_bytes_come_after_the_next_request_reads_good() {
    let s = server().await;
    s.set_fault(Fault::LateTrailingBytes);
    let extra = "poll_interval_ms = 30\nrate_max_per_s = 1000";
    let config = parse(&device("d", s.addr, extra, TWO_TAGS), Path::new("t.toml")).unwrap();
    let batches = run(&config, Duration::from_millis(900)).await;
    let samples = samples_of(&batches, 0);
    assert!(samples.len() >= 20, "{} samples: {:?}", samples.len(), reasons(&samples));
    assert_eq!(reasons(&samples), vec![Quality::Good]);
    assert_reads_only(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_recovers_reads_good_again() {
    let s = server().await;
    s.set_fault(Fault::Hang);
    let config = parse(&device("d", s.addr, "poll_interval_ms = 50", TWO_TAGS), Path::new("t.toml")).unwrap();
    let handle = {
        let cfg = config.clone();
        tokio::spawn(async move { run(&cfg, Duration::from_millis(2500)).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.set_fault(Fault::None);
    let batches = handle.await.unwrap();
    let q = reasons(&samples_of(&batches, 0));
    assert_eq!(q.first(), Some(&Quality::Bad(Reason::Timeout)));
    assert_eq!(q.last(), Some(&Quality::Good), "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_cap_holds_whatever_the_poll_interval() {
    let s = server().await;
    // 20 tags 10 registers apart: with no gap allowed that is 20 requests per poll, every 10 ms,
    // asking for 2000 requests/s from a device capped at 40.
    let tags: String = (0..20)
        .map(|i| {
            format!(
                "[[device.tag]]\nname = \"t{i}\"\nspace = \"holding_register\"\naddress = {}\ntype = \"u16\"\n",
                i * 10
            )
        })
        .collect();
    let config =
        parse(&device("d", s.addr, "poll_interval_ms = 10\nrate_max_per_s = 40", &tags), Path::new("t.toml")).unwrap();
    run(&config, Duration::from_secs(2)).await;
    let times = s.log.times();
    assert!(times.len() >= 60, "only {} requests", times.len());
    // No burst: any 11 consecutive requests span at least 10/40 s, measured where it matters,
    // at the device (less 25 ms for the network and scheduling between sender and device on a
    // busy 2-core machine: a request held up on its way lets the next ten arrive closer; a
    // burst, without the cap, puts 11 requests within a few milliseconds).
    for w in times.windows(11) {
        let span = w[10] - w[0];
        assert!(span >= Duration::from_millis(225), "11 requests within {span:?} under a 40/s cap");
    }
    assert!(times.len() <= 81, "{} requests in 2 s under a 40/s cap", times.len());
    assert_reads_only(&s);
}

/// The device task of a Modbus device of the config, sending into `tx`.
fn modbus_task(
    index: usize,
    device: &std::sync::Arc<airlock_config::Device>,
    first_tag: TagId,
    coalesce: bool,
    tx: &airlock_pipeline::BatchSender,
) -> DeviceTask {
    let airlock_config::Protocol::ModbusTcp(modbus) = &device.protocol else {
        panic!("{} is not a Modbus device", device.name)
    };
    let handle = airlock_pipeline::DeviceHandle::new(index, device, first_tag, tx.clone());
    DeviceTask::new(device, modbus, handle, coalesce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polls_answers_go_on_together_but_never_wait_for_the_rate_cap() {
    // Two requests a poll (a holding and an input register). Unpaced, one batch per poll holds
    // both answers; capped at 4 requests/s, the first answer goes on before the task waits a
    // quarter of a second for the second request's slot.
    let s = server().await;
    let fast =
        parse(&device("d", s.addr, "poll_interval_ms = 20\nrate_max_per_s = 1000", TWO_TAGS), Path::new("t.toml"))
            .unwrap();
    let batches = run(&fast, Duration::from_millis(400)).await;
    assert!(batches.len() >= 5, "{} batches", batches.len());
    // (An answer slower than 2 ms, on a busy machine, goes on alone: most hold both.)
    let whole = batches.iter().filter(|(_, b)| b.samples.len() == 2).count();
    assert!(whole * 2 > batches.len(), "one batch per poll, both answers in it: {whole} of {}", batches.len());

    let slow = parse(&device("d", s.addr, "poll_interval_ms = 20\nrate_max_per_s = 4", TWO_TAGS), Path::new("t.toml"))
        .unwrap();
    let batches = run(&slow, Duration::from_millis(1600)).await;
    assert!(batches.len() >= 4, "{} batches", batches.len());
    assert!(batches.iter().all(|(_, b)| b.samples.len() == 1), "each answer goes on before the wait for the cap");
    let gaps: Vec<Duration> = batches.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(200)), "the cap holds between requests: {gaps:?}");
    assert_reads_only(&s);
}

/// With requests in flight and a rate cap that binds, no answer waits unread while the task
/// waits for the cap's slot to send ahead: each sample is stamped when its answer came, 50 ms
/// after the one before at 20 requests a second. (The task slept for the slots of the requests
/// it sent ahead before it took the answer awaited: the answers at a poll's end came in
/// together, and their samples were stamped together, up to 150 ms late.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_taken_while_requests_in_flight_wait_for_the_rate_cap() {
    let (tags, banks) = six_requests();
    let s = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(banks))).await.unwrap();
    let extra = "poll_interval_ms = 20\nrate_max_per_s = 20\nrequests_in_flight_max = 4";
    let config = parse(&device("d", s.addr, extra, &tags), Path::new("t.toml")).unwrap();
    let batches = run(&config, Duration::from_millis(1000)).await;
    let samples = samples_of(&batches, 0);
    assert!(samples.len() >= 6, "{} samples", samples.len());
    assert_eq!(reasons(&samples), vec![Quality::Good]);
    let gaps: Vec<i64> =
        samples.windows(2).map(|w| (w[1].gateway_time.as_nanos() - w[0].gateway_time.as_nanos()) / 1_000_000).collect();
    assert!(gaps.iter().all(|ms| *ms >= 35), "ms between samples, at 50 ms a request: {gaps:?}");
    assert_reads_only(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_outgrows_the_room_made_for_it() {
    // 3,000 registers: 24 requests of 125 a poll. A batch goes on before an answer would take
    // it past BATCH_SAMPLES, so its vector is never grown (a grown one held twice the room:
    // at a 1 ms poll, 32 MB of batches waited for the collector, not 16).
    let s = server().await;
    let tags: String = (0..3000)
        .map(|i| {
            format!("[[device.tag]]\nname = \"r{i}\"\nspace = \"holding_register\"\naddress = {i}\ntype = \"u16\"\n")
        })
        .collect();
    let extra = "poll_interval_ms = 50\nrate_max_per_s = 100000";
    let config = parse(&device("d", s.addr, extra, &tags), Path::new("t.toml")).unwrap();
    let batches = run(&config, Duration::from_millis(1000)).await;
    let samples: usize = batches.iter().map(|(_, b)| b.samples.len()).sum();
    assert!(samples >= 3000, "{samples} samples in {} batches", batches.len());
    for (_, b) in &batches {
        assert!(b.samples.len() <= airlock_pipeline::BATCH_SAMPLES, "{} samples", b.samples.len());
        assert!(b.samples.capacity() <= airlock_pipeline::BATCH_SAMPLES, "room for {}", b.samples.capacity());
    }
    assert_reads_only(&s);
}
