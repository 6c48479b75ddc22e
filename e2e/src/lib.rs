//! Tally's end-to-end tests: every binary as a process (`tally-agent`, `tally-collector`,
//! `tally`), real ClickHouse servers, the OTel SDK as the client, and the deployment files and
//! dashboards checked against what the binaries accept and expose. The tests are in `tests/`;
//! the harnesses they share are in `testkit`.
