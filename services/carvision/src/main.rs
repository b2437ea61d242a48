fn main() -> std::process::ExitCode {
    serving::main::<carvision::CarVision>()
}
