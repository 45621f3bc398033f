//! flowmesh-chaos-tests: end-to-end fault injection (kill -9, pause, partition, restart)
//! against real `flowmesh` processes in network namespaces.
//!
//! Not built yet: the single-node crash test lives in `node/tests/` until the chaos issue
//! brings the multi-host harness.
