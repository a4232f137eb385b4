"""Plugin functions of the browser tests' workspace (zUI.browser.yaml)."""


def greet(form):
    return {"message": f"Hello {form['name']} ({form['age']})"}


def import_rows(count, ctx):
    ctx.display("list", items=["alpha", "beta"])
    for done in range(1, count + 1):
        ctx.progress(done, count, label="Importing")
    return {"message": f"Imported {count} rows"}
