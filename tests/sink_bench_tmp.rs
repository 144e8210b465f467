#[path = "../benches/sink_upsert.rs"]
mod bench;
#[test]
#[ignore]
fn run_bench() {
    bench::main()
}
