//! Work spread over threads, its results taken in order: how `keywire mutate` parses documents
//! and mutates objects on every CPU while its output, notes and verdicts stay exactly what one
//! thread would give.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

/// Jobs go to the workers in batches of this many: handing over a job costs a few
/// microseconds, a document or an object takes tens to hundreds.
const BATCH: usize = 32;

/// Batches in flight per worker: enough to keep every worker busy while one batch is slow, few
/// enough that memory holds a few hundred objects, not the input.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// Threads to use by default: the CPUs this process may run on (cgroup quotas and affinity
/// included), at most 16.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// Runs `work` on every job, on `workers` threads, and hands each result to `sink` in the
/// order of the jobs. `jobs` and `sink` run on the calling thread. When `sink` breaks, no more
/// jobs are taken and the break value is returned. With one worker everything runs on the
/// calling thread. A panic in `work` is resumed on the calling thread.
pub fn in_order<J, R, B>(
    jobs: impl Iterator<Item = J>,
    workers: usize,
    work: impl Fn(J) -> R + Sync,
    mut sink: impl FnMut(R) -> ControlFlow<B>,
) -> Option<B>
where
    J: Send,
    R: Send,
{
    if workers <= 1 {
        for job in jobs {
            if let ControlFlow::Break(b) = sink(work(job)) {
                return Some(b);
            }
        }
        return None;
    }
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = mpsc::channel::<(usize, Vec<J>)>();
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, std::thread::Result<Vec<R>>)>();
        for _ in 0..workers {
            let (job_rx, done_tx, work, stop) = (&job_rx, done_tx.clone(), &work, &stop);
            scope.spawn(move || {
                loop {
                    let job = job_rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok((i, batch)) = job else { break };
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = panic::catch_unwind(AssertUnwindSafe(|| {
                        batch.into_iter().map(work).collect::<Vec<R>>()
                    }));
                    if done_tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let window = workers * IN_FLIGHT_PER_WORKER;
        let mut jobs = jobs.fuse();
        // Results of batches `next..sent`, by position, as they arrive.
        let mut waiting: VecDeque<Option<std::thread::Result<Vec<R>>>> = VecDeque::new();
        let (mut next, mut sent) = (0, 0);
        let outcome = 'run: loop {
            while sent - next < window {
                let batch: Vec<J> = jobs.by_ref().take(BATCH).collect();
                if batch.is_empty() || job_tx.send((sent, batch)).is_err() {
                    break;
                }
                waiting.push_back(None);
                sent += 1;
            }
            if next == sent {
                break None;
            }
            // Every worker holds a sender until it stops, and none stops while jobs are queued.
            let Ok((i, result)) = done_rx.recv() else {
                break None;
            };
            waiting[i - next] = Some(result);
            while let Some(Some(_)) = waiting.front() {
                let Some(Some(result)) = waiting.pop_front() else {
                    break;
                };
                next += 1;
                match result {
                    Ok(results) => {
                        for r in results {
                            if let ControlFlow::Break(b) = sink(r) {
                                break 'run Some(Ok(b));
                            }
                        }
                    }
                    Err(payload) => break 'run Some(Err(payload)),
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        drop(job_tx);
        match outcome {
            Some(Ok(b)) => Some(b),
            Some(Err(payload)) => panic::resume_unwind(payload),
            None => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Results arrive in the jobs' order whatever order the workers finish in, and a break
    /// stops the run with its value.
    #[test]
    fn results_are_taken_in_order_and_a_break_stops() {
        for workers in [1, 2, 3, 8] {
            let mut seen = Vec::new();
            let none: Option<()> = in_order(
                0..200u64,
                workers,
                |i| {
                    // Early jobs are the slow ones, so later ones finish first.
                    if i % 7 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    i * i
                },
                |r| {
                    seen.push(r);
                    ControlFlow::Continue(())
                },
            );
            assert_eq!(none, None);
            assert_eq!(seen, (0..200u64).map(|i| i * i).collect::<Vec<_>>());

            let mut taken = Vec::new();
            let stopped = in_order(
                0..10_000u64,
                workers,
                |i| i,
                |r| {
                    taken.push(r);
                    if r == 41 {
                        ControlFlow::Break("stopped at 41")
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            );
            assert_eq!(stopped, Some("stopped at 41"));
            assert_eq!(taken, (0..=41).collect::<Vec<_>>());
        }
        assert_eq!(
            in_order(
                std::iter::empty::<u8>(),
                4,
                |i| i,
                |_| ControlFlow::Break(())
            ),
            None
        );
    }

    /// No more than the window of batches is taken ahead of the result the sink waits for.
    #[test]
    fn jobs_are_taken_at_most_a_window_ahead() {
        let taken = std::sync::atomic::AtomicUsize::new(0);
        let workers = 3;
        let jobs = (0..1000usize).inspect(|_| {
            taken.fetch_add(1, Ordering::SeqCst);
        });
        let mut most_ahead = 0;
        in_order(
            jobs,
            workers,
            |i| i,
            |i| {
                most_ahead = most_ahead.max(taken.load(Ordering::SeqCst) - i);
                ControlFlow::<()>::Continue(())
            },
        );
        assert!(
            most_ahead <= workers * IN_FLIGHT_PER_WORKER * BATCH,
            "{most_ahead}"
        );
    }

    #[test]
    fn a_panic_in_work_reaches_the_caller() {
        let caught = panic::catch_unwind(|| {
            in_order(
                0..100u32,
                2,
                |i| {
                    assert!(i != 50, "job fifty");
                    i
                },
                |_| ControlFlow::<()>::Continue(()),
            )
        });
        let payload = caught.expect_err("the panic is resumed");
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        assert_eq!(message, Some("job fifty"));
    }
}
