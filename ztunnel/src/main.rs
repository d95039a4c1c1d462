fn main() {
    println!("ztunnel");
}
