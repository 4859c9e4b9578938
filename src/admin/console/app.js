document.getElementById("app").textContent = "keyrail console";
