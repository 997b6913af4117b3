from setuptools import find_packages, setup

PACKAGE = "fowm_sim"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    include_package_data=True,
    package_data={PACKAGE: ["**/*.xml", "**/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="fowm-ros maintainers",
    maintainer_email="maintainers@fowm-ros.dev",
    description="MuJoCo simulation of the xArm7 world (table, cube, goal, camera), the reach/push/lift tasks, scripted experts, a gymnasium env and a ROS 2 sim node.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "fowm_sim_node = fowm_sim.sim_node:main",
            "fowm-collect = fowm_sim.collect:main",
            "fowm-teleop-sim = fowm_sim.teleop_sim:main",
        ],
    },
)
