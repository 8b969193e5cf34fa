//! One cfg, `uring`, for "`io_uring` is built": Linux with the `io-uring` feature. Elsewhere the
//! readers use `pread`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(uring)");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && std::env::var_os("CARGO_FEATURE_IO_URING").is_some() {
        println!("cargo::rustc-cfg=uring");
    }
}
