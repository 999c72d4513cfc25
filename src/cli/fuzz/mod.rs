//! `presence fuzz`: structured random SimplePush and presence frames, each with the answer the
//! README documents for it. They go first through the session's state machine (no sockets, a
//! million frames in seconds), then over real WebSockets to a node started for the purpose on a
//! temporary SQLite directory. Any frame answered otherwise, and any panic, is a failure.
//!
//! The generator knows what it built (a register with a malformed channel id, a truncated
//! object, a second hello…), so the expected answer comes from the generator, never from the
//! code under test.

mod frames;
mod machine;
mod wire;

use std::time::{Duration, Instant};

use self::frames::{Case, Expect, Rng};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Clone)]
pub struct Options {
    /// Frames through the state machine.
    pub frames: usize,
    /// Frames over real sockets.
    pub wire: usize,
    pub seed: u64,
}

#[derive(Default)]
struct Tally {
    frames: usize,
    connections: usize,
    by_answer: std::collections::BTreeMap<String, usize>,
    /// Frames answered otherwise than documented, and the first few of them.
    wrong: usize,
    violations: Vec<String>,
}

impl Tally {
    fn count(&mut self, expect: &Expect) {
        self.frames += 1;
        *self.by_answer.entry(expect.label()).or_default() += 1;
    }

    fn violation(&mut self, case: &Case, got: String) {
        self.wrong += 1;
        if self.violations.len() < 20 {
            let shown: String = case.text.chars().take(120).collect();
            self.violations.push(format!("{shown:?}: expected {:?}, got {got}", case.expect));
        }
    }

    fn print(&self, phase: &str, elapsed: Duration) {
        let rate = self.frames as f64 / elapsed.as_secs_f64().max(1e-9);
        println!(
            "{phase}: {} frames on {} connections in {:.2} s ({:.0} frames/s), {} answered otherwise than documented",
            self.frames,
            self.connections,
            elapsed.as_secs_f64(),
            rate,
            self.wrong
        );
        let counts: Vec<String> = self.by_answer.iter().map(|(answer, n)| format!("{answer}: {n}")).collect();
        println!("  answers: {}", counts.join(", "));
        for violation in &self.violations {
            println!("  VIOLATION {violation}");
        }
    }
}

pub async fn run(options: Options) -> Result<(), BoxError> {
    println!("seed {}", options.seed);
    let mut rng = Rng(options.seed);
    let started = Instant::now();
    let machine = machine::run_machine(options.frames, &mut rng);
    machine.print("state machine", started.elapsed());
    let mut failed = machine.wrong > 0;
    if options.wire > 0 {
        let started = Instant::now();
        let (wire, panics) = wire::run_wire(options.wire, options.seed).await?;
        wire.print("real sockets", started.elapsed());
        println!("  panics in the node: {panics}");
        failed |= wire.wrong > 0 || panics > 0;
    }
    if failed {
        return Err("some frames were answered otherwise than documented".into());
    }
    Ok(())
}
