//! Test guest: a component of an unrelated world (`other:thing`), so the host can
//! report that it does not implement `ferry:processor`.

wit_bindgen::generate!({
    inline: r#"
        package other:thing;

        world thing {
            export run: func() -> u32;
        }
    "#,
    world: "thing",
});

struct Thing;

impl Guest for Thing {
    fn run() -> u32 {
        42
    }
}

export!(Thing);
