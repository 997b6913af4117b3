
from setuptools import find_packages, setup

PACKAGE = "fowm_xarm"

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
    description="The UFACTORY xArm7: MJCF description, forward/inverse kinematics, joint and workspace limits, and hardware nodes (xarm-python-sdk driver, RealSense camera, teleop).",
    license="MIT",
    entry_points={
        "console_scripts": [
            "fowm_teleop = fowm_xarm.teleop_node:main",
            "fowm_episode_manager = fowm_xarm.episode_manager_node:main",
            "fowm_xarm_driver = fowm_xarm.xarm_driver_node:main",
            "fowm_realsense = fowm_xarm.realsense_node:main",
        ],
    },
)
