-- benchmarks/load/get.lua: the read path. GET $LOAD_PATH with the tenant's API key.
dofile(os.getenv("LOAD_DIR") .. "/report.lua")
wrk.method = "GET"
wrk.path = os.getenv("LOAD_PATH")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("LOAD_API_KEY")
