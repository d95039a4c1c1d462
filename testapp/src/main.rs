fn main() {
    println!("testapp");
}
