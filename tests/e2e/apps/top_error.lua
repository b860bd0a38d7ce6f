local serve = require("actorserve")
error("this app file fails at load time")
