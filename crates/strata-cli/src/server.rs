//! `strata server`: owned by the core session; placeholder until it lands.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {}
pub async fn run(_args: ServerArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet")
}
