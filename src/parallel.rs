//! Work shared out over the machine's cores without a thread pool: the stages run in bursts (a
//! chunk's messages, a batch's files), each a scope of threads that ends with the burst.

/// How many threads a burst may use: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Hands the whole free pages of every malloc arena back to the kernel (glibc's `malloc_trim`;
/// elsewhere nothing). A burst frees batch-sized buffers on every core between buffers that live
/// on (an offline run's open files, the dedup state), and glibc keeps such freed memory resident:
/// called after each offline batch, it took 10 M events from 443 to 390 MiB of peak RSS when every
/// batch is a commit, and from 559–570 to 457 MiB with 64 MiB of open files, for ≈ 4 s more system
/// CPU (once a commit instead: still 551 MiB; benches/RESULTS.md §21).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes each arena's lock while it walks it; it may be called from any
    // thread at any time, and only returns pages that hold no allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `work` applied to each item on up to `workers` threads (the calling one included), shared out
/// round-robin; the results come back in input order. A panic in `work` is resumed on the caller.
pub fn in_parallel<T: Send, R: Send>(
    items: Vec<T>,
    workers: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if items.len() <= 1 || workers <= 1 {
        return items.into_iter().map(work).collect();
    }
    let count = items.len();
    let workers = workers.min(count);
    let mut shares: Vec<Vec<(usize, T)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % workers].push((i, item));
    }
    let mine = shares.remove(0);
    let work = &work;
    let mut done: Vec<Option<R>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .map(|(i, item)| (i, work(item)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut done: Vec<Option<R>> = (0..count).map(|_| None).collect();
        for (i, item) in mine {
            done[i] = Some(work(item));
        }
        for handle in handles {
            let finished = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, result) in finished {
                done[i] = Some(result);
            }
        }
        done
    });
    done.iter_mut().filter_map(Option::take).collect()
}

#[cfg(test)]
mod tests {
    use super::in_parallel;

    #[test]
    fn results_come_back_in_input_order_whatever_the_workers() {
        for workers in [0, 1, 2, 3, 7, 100] {
            for len in [0, 1, 2, 5, 64] {
                let items: Vec<u64> = (0..len).collect();
                let out = in_parallel(items, workers, |i| i * i);
                assert_eq!(
                    out,
                    (0..len).map(|i| i * i).collect::<Vec<_>>(),
                    "{workers} workers, {len} items"
                );
            }
        }
    }
}
