//! The figures of a `cost_bench` run, and how they are printed: a markdown table, lines
//! per worker, and `key=value` lines between `=== cost_bench ===` and `=== end ===`.

use std::time::Duration;

use kcl_examples::prices::{self, Units};
use kcl_examples::proxy::Counts;

use super::{
    FLEET_SIZES, IDLE_RAMP, Phase, Seen, Setting, TARGET_COST_RATIO, TARGET_GET_RECORDS_PER_IDLE_SHARD_HOUR,
    TARGET_LEASE_WRITES_PER_LEASE_HOUR, TARGET_P50_MS, TARGET_P99_MS, Window,
};

/// Everything measured, for printing.
pub(super) struct Report {
    pub(super) tables: usize,
    pub(super) workers: usize,
    pub(super) warm_s: f64,
    /// Per setting, in the order of [`Setting`].
    pub(super) active: Vec<Window>,
    pub(super) idle: Vec<Window>,
    pub(super) leases: Vec<Vec<usize>>,
    pub(super) seen: Seen,
    /// Per entry of [`FLEET_SIZES`].
    pub(super) sizes: Vec<Window>,
    pub(super) total_s: f64,
}

/// The figures of one setting.
struct Figures {
    idle_writes_per_worker_min: f64,
    idle_reads_per_worker_min: f64,
    idle_writes_per_lease_min: f64,
    idle_reads_per_lease_min: f64,
    lease_writes_per_lease_hour: f64,
    checkpoints_per_lease_min: f64,
    get_records_per_idle_shard_hour: f64,
    active_p50: f64,
    active_p99: f64,
    idle_p50: f64,
    idle_p99: f64,
    usd_idle: f64,
    usd_active: f64,
    /// Per worker-month: heartbeats and reads; per lease-month: lease writes and GetRecords.
    usd_worker_month: f64,
    usd_lease_month: f64,
}

impl Report {
    fn figures(&self, i: usize, setting: Setting) -> Figures {
        let (idle, active) = (&self.idle[i], &self.active[i]);
        let shards = self.tables as f64;
        let it = idle.total();
        let per_lease_min = |n: u64| n as f64 / shards / idle.minutes;
        let active_sorted = self.seen.sorted(setting, Phase::Active);
        let probe_sorted = self.seen.sorted(setting, Phase::Probe);
        let fixed = Units { write: it.heartbeat_writes as f64, read: it.lease_table_read_units(), streams_read: 0.0 };
        let per_lease = Units {
            write: (it.lease_writes + it.checkpoint_writes) as f64,
            read: 0.0,
            streams_read: it.get_records as f64,
        };
        Figures {
            idle_writes_per_worker_min: idle.rate(Counts::lease_table_writes),
            idle_reads_per_worker_min: idle.rate(Counts::lease_table_reads),
            idle_writes_per_lease_min: per_lease_min(it.lease_table_writes()),
            idle_reads_per_lease_min: per_lease_min(it.lease_table_reads()),
            lease_writes_per_lease_hour: per_lease_min(it.lease_writes) * 60.0,
            checkpoints_per_lease_min: active.total().checkpoint_writes as f64 / shards / active.minutes,
            get_records_per_idle_shard_hour: per_lease_min(it.get_records) * 60.0,
            active_p50: percentile_ms(&active_sorted, 50.0),
            active_p99: percentile_ms(&active_sorted, 99.0),
            idle_p50: percentile_ms(&probe_sorted, 50.0),
            idle_p99: percentile_ms(&probe_sorted, 99.0),
            usd_idle: idle.units().usd_per_shard_month(idle.minutes, shards),
            usd_active: active.units().usd_per_shard_month(active.minutes, shards),
            usd_worker_month: fixed.usd_per_shard_month(idle.minutes, idle.workers()),
            usd_lease_month: per_lease.usd_per_shard_month(idle.minutes, shards),
        }
    }

    pub(super) fn print(&self) {
        let settings = [Setting::KclStyle, Setting::NewDefaults];
        let f: Vec<Figures> = settings.iter().enumerate().map(|(i, &s)| self.figures(i, s)).collect();
        let (k, n) = (&f[0], &f[1]);
        let at = |x: &Figures, leases: f64| x.usd_worker_month / leases + x.usd_lease_month;
        println!("{}", prices::describe());
        println!(
            "fleet: {} workers per setting, {} shards (tables) per setting, about {:.1} leases per worker; \
             per-minute figures from the idle window after a {}s ramp unless marked active",
            self.workers,
            self.tables,
            self.tables as f64 / self.workers as f64,
            IDLE_RAMP.as_secs()
        );
        println!();
        println!("| figure | KCL-style | new defaults | target (new defaults) |");
        println!("|---|---:|---:|---|");
        let row = |name: &str, a: String, b: String, target: &str| println!("| {name} | {a} | {b} | {target} |");
        let f1 = |v: f64| format!("{v:.1}");
        let f2 = |v: f64| format!("{v:.2}");
        let usd = |v: f64| format!("${v:.4}");
        row(
            "lease-table writes / worker / min",
            f1(k.idle_writes_per_worker_min),
            f1(n.idle_writes_per_worker_min),
            "independent of fleet size and leases",
        );
        row(
            "lease-table reads / worker / min",
            f1(k.idle_reads_per_worker_min),
            f1(n.idle_reads_per_worker_min),
            "independent of fleet size and leases",
        );
        row("lease-table writes / lease / min", f2(k.idle_writes_per_lease_min), f2(n.idle_writes_per_lease_min), "");
        row("lease-table reads / lease / min", f2(k.idle_reads_per_lease_min), f2(n.idle_reads_per_lease_min), "");
        row(
            "shard-lease writes / lease / hour (checkpoints aside)",
            f1(k.lease_writes_per_lease_hour),
            f1(n.lease_writes_per_lease_hour),
            &format!("≤ {TARGET_LEASE_WRITES_PER_LEASE_HOUR}"),
        );
        row(
            "checkpoint writes / lease / min (active, 1 change/s)",
            f1(k.checkpoints_per_lease_min),
            f1(n.checkpoints_per_lease_min),
            "",
        );
        row(
            "GetRecords / idle shard-hour",
            format!("{:.0}", k.get_records_per_idle_shard_hour),
            format!("{:.0}", n.get_records_per_idle_shard_hour),
            &format!("≤ {TARGET_GET_RECORDS_PER_IDLE_SHARD_HOUR}"),
        );
        row(
            "latency p50 / p99 active (ms)",
            format!("{:.0} / {:.0}", k.active_p50, k.active_p99),
            format!("{:.0} / {:.0}", n.active_p50, n.active_p99),
            &format!("≤ {TARGET_P50_MS} / ≤ {TARGET_P99_MS}"),
        );
        row(
            "latency p50 / p99 after idle (ms)",
            format!("{:.0} / {:.0}", k.idle_p50, k.idle_p99),
            format!("{:.0} / {:.0}", n.idle_p50, n.idle_p99),
            "",
        );
        row(
            "$ / shard-month idle (this fleet)",
            usd(k.usd_idle),
            usd(n.usd_idle),
            &format!("≥ {TARGET_COST_RATIO}× below KCL-style"),
        );
        row("$ / shard-month active (this fleet)", usd(k.usd_active), usd(n.usd_active), "");
        row("$ / worker-month (heartbeats + reads)", usd(k.usd_worker_month), usd(n.usd_worker_month), "");
        row("$ / lease-month (lease writes + GetRecords)", usd(k.usd_lease_month), usd(n.usd_lease_month), "");
        for leases in [1.0, 10.0, 100.0] {
            row(
                &format!("$ / shard-month idle at {leases} leases / worker"),
                usd(at(k, leases)),
                usd(at(n, leases)),
                "",
            );
        }
        let ratio = |a: f64, b: f64| format!("{:.1}×", a / b);
        row(
            "ratio KCL-style / new defaults, $ / shard-month idle (this fleet)",
            String::new(),
            ratio(k.usd_idle, n.usd_idle),
            &format!("≥ {TARGET_COST_RATIO}×"),
        );
        row(
            "ratio at 10 / 100 leases per worker",
            String::new(),
            format!("{} / {}", ratio(at(k, 10.0), at(n, 10.0)), ratio(at(k, 100.0), at(n, 100.0))),
            &format!("≥ {TARGET_COST_RATIO}×"),
        );
        for (size, w) in FLEET_SIZES.iter().zip(&self.sizes) {
            row(
                &format!("new defaults, {size} workers: lease-table reads / writes per worker / min"),
                String::new(),
                format!("{:.1} / {:.1}", w.rate(Counts::lease_table_reads), w.rate(Counts::lease_table_writes)),
                "independent of fleet size",
            );
        }
        println!();
        println!(
            "ratio KCL-style / new defaults: $ per shard-month idle {:.1}×, active {:.1}×, at 10 leases/worker {:.1}×, at 100 {:.1}×; GetRecords per idle shard-hour {:.1}×",
            k.usd_idle / n.usd_idle,
            k.usd_active / n.usd_active,
            at(k, 10.0) / at(n, 10.0),
            at(k, 100.0) / at(n, 100.0),
            k.get_records_per_idle_shard_hour / n.get_records_per_idle_shard_hour
        );
        println!();
        println!("per worker (per minute; idle window, then active window):");
        for (i, setting) in settings.iter().enumerate() {
            for (w, (idle, active)) in self.idle[i].per_worker.iter().zip(&self.active[i].per_worker).enumerate() {
                let line = |c: &Counts, minutes: f64| {
                    let m = |v: u64| v as f64 / minutes;
                    format!(
                        "heartbeat_w={:.1} lease_w={:.1} checkpoint_w={:.1} get_item={:.1} get_item_eventual={:.1} scan={:.1} scan_rru={:.1} get_records={:.1} get_shard_iterator={:.1} describe_stream={:.1}",
                        m(c.heartbeat_writes),
                        m(c.lease_writes),
                        m(c.checkpoint_writes),
                        m(c.get_item),
                        m(c.get_item_eventual),
                        m(c.scan),
                        m(c.scan_read_units),
                        m(c.get_records),
                        m(c.get_shard_iterator),
                        m(c.describe_stream)
                    )
                };
                println!(
                    "  {} w{w:02} leases={} idle: {}",
                    setting.name(),
                    self.leases[i][w],
                    line(idle, self.idle[i].minutes)
                );
                println!(
                    "  {} w{w:02} leases={} active: {}",
                    setting.name(),
                    self.leases[i][w],
                    line(active, self.active[i].minutes)
                );
            }
        }
        println!();
        println!("=== cost_bench ===");
        println!("machine_nproc={}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
        println!("tables_per_setting={} workers_per_setting={}", self.tables, self.workers);
        println!("warm_s={:.1} total_s={:.1}", self.warm_s, self.total_s);
        println!(
            "active_window_s={:.1} idle_window_s={:.1} idle_ramp_s={}",
            self.active[0].minutes * 60.0,
            self.idle[0].minutes * 60.0,
            IDLE_RAMP.as_secs()
        );
        for (i, setting) in settings.iter().enumerate() {
            let (x, key) = (&f[i], setting.key());
            println!("{key}.leases_per_worker={:?}", self.leases[i]);
            println!(
                "{key}.active_samples={} probe_samples={}",
                self.seen.count(*setting, Phase::Active),
                self.seen.count(*setting, Phase::Probe)
            );
            println!("{key}.lease_table_writes_per_worker_min={:.2}", x.idle_writes_per_worker_min);
            println!("{key}.lease_table_reads_per_worker_min={:.2}", x.idle_reads_per_worker_min);
            println!("{key}.shard_lease_writes_per_lease_hour={:.2}", x.lease_writes_per_lease_hour);
            println!("{key}.checkpoints_per_lease_min_active={:.2}", x.checkpoints_per_lease_min);
            println!("{key}.get_records_per_idle_shard_hour={:.0}", x.get_records_per_idle_shard_hour);
            println!("{key}.latency_active_p50_ms={:.1} p99_ms={:.1}", x.active_p50, x.active_p99);
            println!("{key}.latency_after_idle_p50_ms={:.1} p99_ms={:.1}", x.idle_p50, x.idle_p99);
            println!("{key}.usd_per_shard_month_idle={:.5} active={:.5}", x.usd_idle, x.usd_active);
            println!(
                "{key}.usd_per_worker_month={:.5} usd_per_lease_month={:.5}",
                x.usd_worker_month, x.usd_lease_month
            );
            let unreadable: usize =
                self.idle[i].per_worker.iter().chain(&self.active[i].per_worker).map(|c| c.unreadable.len()).sum();
            println!("{key}.unreadable_connections={unreadable}");
        }
        for (size, w) in FLEET_SIZES.iter().zip(&self.sizes) {
            let reads: Vec<f64> = w.per_worker.iter().map(|c| c.lease_table_reads() as f64 / w.minutes).collect();
            let lo = reads.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = reads.iter().copied().fold(0.0, f64::max);
            println!(
                "fleet_{size}.lease_table_reads_per_worker_min={:.2} min={lo:.2} max={hi:.2} writes_per_worker_min={:.2}",
                w.rate(Counts::lease_table_reads),
                w.rate(Counts::lease_table_writes)
            );
        }
        println!("ratio_usd_idle={:.2} ratio_usd_active={:.2}", k.usd_idle / n.usd_idle, k.usd_active / n.usd_active);
        println!("=== end ===");
    }
}

/// Nearest-rank percentile of sorted values, in ms.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}
