fn main() {
    println!("waypoint");
}
