use super::fake::FakeFds;
use super::*;

const PID: i32 = 100;
const BIG: u32 = 1_000_000;

fn synced(src: &mut FakeFds) -> FdTable {
    let mut t = FdTable::default();
    assert!(t.sync(PID, src.count(PID), src, &mut Budget::new(BIG)));
    assert!(t.in_sync());
    t
}

#[test]
fn lowest_free_numbers_are_the_holes_then_the_top() {
    let fds: BTreeMap<i32, Entry> = [0, 1, 3, 4, 7]
        .into_iter()
        .map(|f| (f, Entry::Other))
        .collect();
    let got: Vec<i32> = lowest_free(&fds).take(5).collect();
    assert_eq!(got, vec![2, 5, 6, 8, 9]);
    assert_eq!(
        lowest_free(&BTreeMap::new()).take(2).collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[test]
fn a_first_sync_lists_and_reads_everything_once() {
    let mut src = FakeFds::with_sockets(PID, 10_000, 1_000);
    let t = synced(&mut src);
    assert_eq!(t.len(), 10_000);
    assert_eq!(t.fds_of(1_000 + 9_999), &[9_999]);
    assert_eq!((src.reads, src.listed), (10_000, 10_000));
}

#[test]
fn an_unchanged_count_costs_no_read_at_all() {
    let mut src = FakeFds::with_sockets(PID, 10_000, 1_000);
    let mut t = synced(&mut src);
    let (reads, listed) = (src.reads, src.listed);
    let mut b = Budget::new(BIG);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut b));
    assert_eq!((src.reads, src.listed), (reads, listed));
    assert_eq!(b.left(), BIG);
}

#[test]
fn a_new_socket_among_ten_thousand_is_found_with_one_read() {
    let mut src = FakeFds::with_sockets(PID, 10_000, 1_000);
    let mut t = synced(&mut src);
    let reads = src.reads;
    let fd = src.open(PID, Read::Socket(77));
    assert_eq!(fd, 10_000);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut Budget::new(BIG)));
    assert_eq!(t.fds_of(77), &[10_000]);
    assert_eq!(src.reads - reads, 1);
    // Closed again: one read of the top entry explains the lower count.
    src.close(PID, fd);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut Budget::new(BIG)));
    assert!(t.fds_of(77).is_empty());
    assert_eq!(src.reads - reads, 2);
    assert!(t.in_sync());
}

#[test]
fn a_new_fd_in_a_hole_is_probed_there_first() {
    let mut src = FakeFds::with_sockets(PID, 100, 1_000);
    let mut t = synced(&mut src);
    src.close(PID, 40);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut Budget::new(BIG)));
    let listed = src.listed;
    // The close was not at the top: explained by listing again, which is cheap here.
    assert_eq!(t.fds_of(1_040), &[] as &[i32]);
    let fd = src.open(PID, Read::Socket(5));
    assert_eq!(fd, 40);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut Budget::new(BIG)));
    assert_eq!(t.fds_of(5), &[40]);
    assert_eq!(src.listed, listed, "the probe of the hole explained it");
}

#[test]
fn what_probes_cannot_explain_is_listed_again() {
    let mut src = FakeFds::with_sockets(PID, 10, 1_000);
    let mut t = synced(&mut src);
    // Two closes below the top: the top fds are open, so the table is listed again.
    src.close(PID, 2);
    src.close(PID, 5);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut Budget::new(BIG)));
    assert!(t.in_sync());
    assert_eq!(t.len(), 8);
    assert!(t.fds_of(1_002).is_empty() && t.fds_of(1_005).is_empty());
    // Two opens and a close: the count rises by one, and the probe of the lowest free
    // number (2) explains it. The open at 5 and the close of 9 together are a swap in
    // effect, which a count cannot show; reverify finds it.
    src.open(PID, Read::Socket(1));
    src.open(PID, Read::Socket(2));
    src.close(PID, 9);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut Budget::new(BIG)));
    assert_eq!(t.fds_of(1), &[2]);
    assert!(t.fds_of(2).is_empty());
    assert!(t.reverify(PID, 2, usize::MAX, &mut src, &mut Budget::new(BIG)));
    assert_eq!(t.fds_of(2), &[5]);
    assert!(t.fds_of(1_009).is_empty());
    assert!(t.in_sync());
}

#[test]
fn a_swap_at_an_equal_count_is_found_by_reverify_only() {
    let mut src = FakeFds::with_sockets(PID, 50, 1_000);
    let mut t = synced(&mut src);
    src.close(PID, 49);
    src.open(PID, Read::Socket(9));
    assert!(t.sync(PID, src.count(PID), &mut src, &mut Budget::new(BIG)));
    assert!(t.fds_of(9).is_empty(), "a count cannot show a swap");
    let reads = src.reads;
    assert!(t.reverify(PID, 9, usize::MAX, &mut src, &mut Budget::new(BIG)));
    assert_eq!(t.fds_of(9), &[49]);
    assert_eq!(src.reads - reads, 1, "newest first: the top fd at once");
}

#[test]
fn a_big_table_is_built_over_several_budgets_newest_fds_first() {
    let mut src = FakeFds::with_sockets(PID, 10_000, 1_000);
    let mut t = FdTable::default();
    let mut b = Budget::new(600);
    assert!(t.sync(PID, src.count(PID), &mut src, &mut b));
    assert!(b.exhausted && !t.in_sync());
    assert!(src.reads + src.listed <= 600, "never more than the budget");
    // Listing first, then reads from the top: the newest socket is known soonest.
    let mut rounds = 1;
    while !t.in_sync() {
        let mut b = Budget::new(20_000);
        assert!(t.sync(PID, src.count(PID), &mut src, &mut b));
        if rounds == 1 {
            assert_eq!(t.fds_of(1_000 + 9_999), &[9_999]);
        }
        rounds += 1;
        assert!(rounds < 10, "a bounded number of rounds");
    }
    assert_eq!(t.len(), 10_000);
    assert_eq!(src.reads, 10_000, "each fd read once over all rounds");
}

#[test]
fn without_a_count_every_sync_lists() {
    let mut src = FakeFds::with_sockets(PID, 20, 1_000);
    let mut t = FdTable::default();
    assert!(t.sync(PID, None, &mut src, &mut Budget::new(BIG)));
    let listed = src.listed;
    src.open(PID, Read::Socket(3));
    assert!(t.sync(PID, None, &mut src, &mut Budget::new(BIG)));
    assert_eq!(t.fds_of(3), &[20]);
    assert_eq!(src.listed - listed, 21);
    assert_eq!(src.reads, 21, "known entries are not read again");
}

#[test]
fn a_gone_process_says_so_and_a_dup_is_two_fds() {
    let mut src = FakeFds::with_sockets(PID, 3, 1_000);
    src.open(PID, Read::Socket(1_001));
    let mut t = synced(&mut src);
    let mut fds = t.fds_of(1_001).to_vec();
    fds.sort_unstable();
    assert_eq!(fds, vec![1, 3]);
    src.procs.clear();
    assert!(!t.sync(PID, None, &mut src, &mut Budget::new(BIG)));
}

#[test]
fn confirm_corrects_the_table() {
    let mut src = FakeFds::with_sockets(PID, 3, 1_000);
    let mut t = synced(&mut src);
    src.procs.get_mut(&PID).unwrap().insert(2, Read::Other);
    assert!(!t.confirm(PID, 2, 1_002, &mut src, &mut Budget::new(BIG)));
    assert!(t.fds_of(1_002).is_empty());
    assert!(t.confirm(PID, 1, 1_001, &mut src, &mut Budget::new(BIG)));
    assert!(!t.confirm(PID, 1, 1_001, &mut src, &mut Budget::new(1)));
}
