//! The chaos harness at the small size CI runs: 2000 jobs, 10 worker kills, a Redis
//! kill, a wipe, a kill followed by a wipe, a wipe during a reconciliation and a
//! PostgreSQL pause; nothing may be lost, and every worker stays up.

use courier_chaos::{Config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_under_chaos() {
    let report = run(Config::small()).await.expect("the chaos run");
    println!("{report}");
    assert_eq!(report.accepted, 2000);
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.terminal, 2000);
    assert_eq!(report.never_called, 0, "{report}");
    assert!(report.faults.len() >= 16, "{report}");
    assert_eq!(report.workers.alive, report.workers.started, "{report}");
    assert_eq!(report.workers.ran_jobs, report.workers.alive, "{report}");
    // Each repeated call was in flight at a fault (SPEC 5: duplicates only then).
    assert_eq!(report.unexplained_duplicates, 0, "{report}");
}
