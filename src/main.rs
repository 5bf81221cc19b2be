fn main() {
    // TODO: the command line (`run`, `check`, `demo`).
}
